"""The single-task protocols of CoOp, LAMM and PTNL as pure functions of labels, scores and seeds.

few_shot: K images per class. label_noise: symmetric and confusing noise. pseudo_labels: UPL's top-K
and Robust UPL's random-K selection. relabeled: a dataset view with chosen indices and given labels.
Nothing here touches a model: scores come in as arrays.
"""
