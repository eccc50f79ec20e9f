"""S-Prompts: per-task prompts chosen per image by the nearest K-means centre.

The forward is checked against the paper's equations written on open_clip's own modules (prompts
concatenated to the patch tokens before ln_pre; the text tower on [SOT][ctx][name][.][EOT]; cosine logits
times logit_scale), the K-means against a plain NumPy Lloyd's from the same start, the task choice against
a plain nearest-centre loop; a short run on the tiny stream checks the plugin, the frozen old tasks, the
task-identification record and a resume that restores the centres.
"""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from clprompt.errors import ConfigValueError
from clprompt.methods.sprompts import KMeansPlugin, SPrompts, kmeans, nearest_task
from clprompt.methods.zeroshot import ZeroShot
from clprompt.run import run
from helpers import compose_config

NAMES = ["red", "green", "golden retriever", "blue", "violet"]
TASKS = [[0, 1], [2, 3], [4]]          # task 3 (class 4) is never trained in the unit tests
TOL = dict(atol=1e-5, rtol=1e-5)


def images(n=4, seed=0):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def experience(index):
    return SimpleNamespace(current_experience=index, classes_in_this_experience=TASKS[index])


def two_task_method(backbone, **options):
    """Tasks 1 and 2 added (task 2 trainable), prompts moved off their start, centres that send images 0 and 1
    to task 1 and images 2 and 3 to task 2; in training mode."""
    torch.manual_seed(0)
    method = SPrompts(backbone, NAMES, **{"context_length": 3, "image_prompt_length": 2, **options}).train()
    for index in (0, 1):
        method.tasks.adaptation(experience(index))
    with torch.no_grad():
        for parameter in list(method.tasks.contexts) + list(method.tasks.image_prompts):
            parameter.add_(0.3 * torch.randn_like(parameter))
        query = F.normalize(backbone.model.encode_image(images()), dim=-1)
    method.tasks.set_centroids(0, query[[0, 1, 0, 1, 0]])
    method.tasks.set_centroids(1, query[[2, 3, 2, 3, 2]])
    return method


def reference_image_features(clip, pixels, prompts):
    """CLIP's image tower with per-image prompts [B, P, width] after the positional embedding, before ln_pre."""
    visual = clip.visual
    x = visual.conv1(pixels)
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.expand(x.shape[0], 1, -1), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(torch.cat([x, prompts], dim=1))
    for block in visual.transformer.resblocks:
        x = block(x)
    return F.normalize(visual.ln_post(x[:, 0]) @ visual.proj, dim=-1)


def reference_text_features(backbone, context, class_ids):
    """open_clip's full 77-token text forward on [SOT][ctx_1..ctx_M][name][.][EOT]: placeholder words
    tokenized, their embeddings replaced by the context."""
    clip, m = backbone.model, context.shape[0]
    tokens = backbone.tokenizer([" ".join(["x"] * m) + f" {NAMES[c]}." for c in class_ids])
    x = clip.token_embedding(tokens)
    x = torch.cat([x[:, :1], context[None].expand(len(class_ids), -1, -1), x[:, 1 + m:]], dim=1)
    x = x + clip.positional_embedding
    for block in clip.transformer.resblocks:
        x = block(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)[torch.arange(len(class_ids)), tokens.argmax(dim=-1)] @ clip.text_projection
    return F.normalize(x, dim=-1)


def plain_choice(query, centroids, distance):
    """The task of the nearest centre, by loops: query [B, d], centroids [T, K, d] (NumPy)."""
    chosen = []
    for q in query:
        best = None
        for task, centres in enumerate(centroids):
            for c in centres:
                d = np.abs(q - c).sum() if distance == "l1" else np.sqrt(((q - c) ** 2).sum())
                if best is None or d < best[0]:
                    best = (d, task)
        chosen.append(best[1])
    return np.array(chosen)


def test_zero_length_prompts_give_zero_shots_logits(tiny_backbone):
    method = SPrompts(tiny_backbone, NAMES, context_init="a photo of a", image_prompt_length=0).train()
    zeroshot = ZeroShot(tiny_backbone, NAMES).eval()
    for index in (0, 1):
        method.tasks.adaptation(experience(index))
    with torch.no_grad():
        query = F.normalize(tiny_backbone.model.encode_image(images()), dim=-1)
        method.tasks.set_centroids(0, query[[0, 1, 0, 1, 0]])
        method.tasks.set_centroids(1, query[[2, 3, 2, 3, 2]])
        expected = zeroshot(images(), candidate_classes=range(5))
        trained = method(images(), candidate_classes=[2, 3])                  # training: task 2 for every image
        torch.testing.assert_close(trained[:, 2:4], expected[:, 2:4], **TOL)
        method.eval()
        chosen = method(images(), candidate_classes=[0, 1, 2, 3])             # images 0, 1 -> task 1; 2, 3 -> task 2
        torch.testing.assert_close(chosen[:2, :2], expected[:2, :2], **TOL)
        torch.testing.assert_close(chosen[2:, 2:4], expected[2:, 2:4], **TOL)
        assert torch.isinf(chosen[:2, 2:]).all() and torch.isinf(chosen[2:, :2]).all()
        untrained = method(images(), candidate_classes=[4])                   # no trained task owns class 4
        assert method.chosen_tasks is None
        torch.testing.assert_close(untrained[:, 4], expected[:, 4], **TOL)


def test_an_images_logits_are_the_same_alone_and_in_any_batch(tiny_backbone):
    method = two_task_method(tiny_backbone).eval()
    batch = images(4)
    with torch.no_grad():
        together = method(batch, candidate_classes=[0, 1, 2, 3])
        assert method.chosen_tasks.tolist() == [0, 0, 1, 1]
        shuffled = method(batch[[3, 1, 2, 0]])[[3, 1, 2, 0]]
        for i in range(4):
            torch.testing.assert_close(method(batch[i:i + 1])[0], together[i], **TOL)
        torch.testing.assert_close(shuffled, together, **TOL)


def test_kmeans_is_a_lloyd_fixed_point_at_least_as_good_as_a_plain_lloyd():
    generator = np.random.default_rng(0)
    blobs = np.concatenate([generator.normal(loc, 0.3, size=(40, 8)) for loc in generator.normal(0, 2, size=(5, 8))])
    features = torch.from_numpy(blobs)
    ours = kmeans(features, 5, seed=7)
    assert ours.shape == (5, 8) and ours.dtype == torch.float32
    centres = ours.double().numpy()
    nearest = np.array([np.argmin([((x - c) ** 2).sum() for c in centres]) for x in blobs])  # written plainly
    assert sorted(set(nearest)) == [0, 1, 2, 3, 4]
    for j in range(5):                                                       # each centre: the mean of its points
        np.testing.assert_allclose(centres[j], blobs[nearest == j].mean(0), atol=1e-5)
    inertia = ((blobs - centres[nearest]) ** 2).sum()
    start = blobs[generator.choice(len(blobs), 5, replace=False)]           # a plain Lloyd's from random points
    for _ in range(100):
        assigned = np.array([np.argmin([((x - c) ** 2).sum() for c in start]) for x in blobs])
        start = np.array([blobs[assigned == j].mean(0) if (assigned == j).any() else start[j] for j in range(5)])
    assert inertia <= ((blobs - start[assigned]) ** 2).sum() + 1e-6
    assert torch.equal(kmeans(features, 5, seed=7), ours)                   # seeded: the same twice
    few = torch.from_numpy(blobs[:3])                                        # fewer points than centres
    assert {tuple(c) for c in kmeans(few, 5, seed=0).double().numpy().round(5)} == \
        {tuple(p) for p in blobs[:3].round(5)}


def test_kmeans_is_scikit_learns_as_the_reference_calls_it():
    from sklearn.cluster import KMeans
    features = torch.from_numpy(np.random.default_rng(1).normal(size=(60, 6)))
    reference = KMeans(n_clusters=5, random_state=0, n_init=10).fit(features.numpy()).cluster_centers_
    np.testing.assert_array_equal(kmeans(features, 5, seed=0).numpy(), reference.astype(np.float32))


@pytest.mark.parametrize("distance", ["l1", "euclidean"])
def test_task_choice_equals_a_plain_nearest_centre(tiny_backbone, distance):
    generator = torch.Generator().manual_seed(1)
    query = F.normalize(torch.randn(50, 16, generator=generator), dim=-1)
    centroids = F.normalize(torch.randn(3, 5, 16, generator=generator), dim=-1)
    expected = plain_choice(query.numpy(), centroids.numpy(), distance)
    assert nearest_task(query, centroids, distance).tolist() == expected.tolist()
    assert len(set(expected)) == 3
    method = two_task_method(tiny_backbone, distance=distance).eval()       # the method's own choice
    with torch.no_grad():
        method.tasks.centroids.add_(0.2 * torch.randn(method.tasks.centroids.shape, generator=generator))
        method(images(8, seed=3), candidate_classes=[0, 1, 2, 3])
        query = F.normalize(tiny_backbone.model.encode_image(images(8, seed=3)), dim=-1)
    expected = plain_choice(query.numpy(), method.tasks.centroids.numpy(), distance)
    assert method.chosen_tasks.tolist() == expected.tolist()


def reference_logits(backbone, method, batch, chosen, candidates, task_classes):
    """Logits [B, classes]: image b with task chosen[b]'s image prompts, scored against that task's candidate
    classes with that task's context (cosine times logit_scale), -inf elsewhere."""
    clip, tasks = backbone.model, method.tasks
    image = reference_image_features(clip, batch, torch.stack([tasks.image_prompts[t] for t in chosen]))
    logits = torch.full((batch.shape[0], len(NAMES)), float("-inf"))
    for b, t in enumerate(chosen):
        own = [c for c in candidates if c in task_classes[t]]
        text = reference_text_features(backbone, tasks.contexts[t], own)
        logits[b, own] = clip.logit_scale.exp() * image[b] @ text.t()
    return logits


def test_forward_equals_the_papers_equations(tiny_backbone):
    method = two_task_method(tiny_backbone)
    batch = images(4)
    # training: task 2's prompts for every image, its classes ranked; loss and gradients as the reference's
    logits = method(batch, candidate_classes=[0, 1, 2, 3])
    expected = reference_logits(tiny_backbone, method, batch, [1, 1, 1, 1], [0, 1, 2, 3], TASKS)
    torch.testing.assert_close(logits, expected, **TOL)
    targets = torch.tensor([2, 3, 3, 2])
    trained = [method.tasks.contexts[1], method.tasks.image_prompts[1]]
    ours = torch.autograd.grad(F.cross_entropy(logits, targets), trained)
    theirs = torch.autograd.grad(F.cross_entropy(expected, targets), trained)
    for a, b in zip(ours, theirs):
        torch.testing.assert_close(a, b, **TOL)
        assert b.abs().sum() > 0
    # evaluation: each image with its nearest centre's task (images 0, 1 -> task 1; 2, 3 -> task 2)
    method.eval()
    with torch.no_grad():
        torch.testing.assert_close(method(batch, candidate_classes=[0, 1, 2, 3]),
                                   reference_logits(tiny_backbone, method, batch, [0, 0, 1, 1], [0, 1, 2, 3], TASKS),
                                   **TOL)
        torch.testing.assert_close(method(batch, candidate_classes=[2, 3]),
                                   reference_logits(tiny_backbone, method, batch, [1, 1, 1, 1], [2, 3], TASKS), **TOL)


def test_a_class_of_several_tasks_is_scored_with_the_chosen_tasks_context(tiny_backbone):
    """Domain-incremental: both tasks own classes 0 and 1; each image gets its chosen task's prompts."""
    torch.manual_seed(0)
    method = SPrompts(tiny_backbone, NAMES, context_length=3, image_prompt_length=2).train()
    for index in (0, 1):
        method.tasks.adaptation(SimpleNamespace(current_experience=index, classes_in_this_experience=[0, 1]))
    with torch.no_grad():
        for parameter in list(method.tasks.contexts) + list(method.tasks.image_prompts):
            parameter.add_(0.3 * torch.randn_like(parameter))
        query = F.normalize(tiny_backbone.model.encode_image(images()), dim=-1)
    method.tasks.set_centroids(0, query[[1, 2, 1, 2, 1]])
    method.tasks.set_centroids(1, query[[0, 3, 0, 3, 0]])
    method.eval()
    with torch.no_grad():
        logits = method(images(), candidate_classes=[0, 1])
        assert method.chosen_tasks.tolist() == [1, 0, 0, 1]
        expected = reference_logits(tiny_backbone, method, images(), [1, 0, 0, 1], [0, 1], [[0, 1], [0, 1]])
    torch.testing.assert_close(logits, expected, **TOL)


def test_trainable_parameters_are_the_current_tasks_and_only_they_get_gradients(tiny_backbone):
    method = two_task_method(tiny_backbone)
    names = [n for n, p in method.named_parameters() if p.requires_grad]
    assert names == ["tasks.contexts.1", "tasks.image_prompts.1"]
    assert [id(p) for p in method.trainable_parameters()] == [id(p) for n, p in method.named_parameters() if n in names]
    F.cross_entropy(method(images(), candidate_classes=[2, 3]), torch.tensor([2, 3, 2, 3])).backward()
    for name, parameter in method.named_parameters():
        assert (parameter.grad is not None) == (name in names), name


def test_chosen_tasks_are_set_in_evaluation_when_there_is_a_choice(tiny_backbone):
    method = two_task_method(tiny_backbone)
    with torch.no_grad():
        method(images(), candidate_classes=[2, 3])
        assert method.chosen_tasks is None                                   # training: the true task
        method.eval()
        method(images(), candidate_classes=[0, 1, 2, 3])
        assert method.chosen_tasks.dtype == torch.long and method.chosen_tasks.tolist() == [0, 0, 1, 1]
        method(images(), candidate_classes=[0, 1])                           # task-incremental: task given
        assert method.chosen_tasks is None


def test_the_plugin_clusters_the_experiences_training_images_under_the_eval_transform(tiny_backbone):
    method = two_task_method(tiny_backbone)
    pixels = images(9, seed=5)

    class Dataset(list):
        def eval(self):
            return Dataset((image, label, 0) for image, label, _ in self)

    data = Dataset((pixels[i], 2 + i % 2, 0) for i in range(9))
    strategy = SimpleNamespace(experience=SimpleNamespace(current_experience=1, dataset=data), eval_mb_size=4,
                               device=torch.device("cpu"))
    method.tasks.clustered[1] = False
    KMeansPlugin(method).after_training_exp(strategy)
    with torch.no_grad():
        features = F.normalize(tiny_backbone.model.encode_image(pixels), dim=-1)
    torch.testing.assert_close(method.tasks.centroids[1], kmeans(features, 5, seed=0), **TOL)
    assert bool(method.tasks.clustered[1])


@pytest.mark.parametrize("option, value", [("context_length", -1), ("image_prompt_length", 1.5), ("clusters", 0),
                                           ("kmeans_iterations", 0), ("distance", "cosine"),
                                           ("template", "a photo")])
def test_bad_options_name_the_key(tiny_backbone, option, value):
    with pytest.raises(ConfigValueError, match=f"method.{option}="):
        SPrompts(tiny_backbone, NAMES, **{option: value})


# ---- a short run on the tiny stream: 3 experiences of 2 colours, 1 epoch -------------------------------------

RUN = ["scenario=tiny_colors", "model=tiny", "method=sprompts", "progress=false", "train.epochs=1",
       "train.batch_size=4", "cache.dir=null"]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("sprompts") / "run"
    return run_dir, run(compose_config(RUN), run_dir)


def test_a_run_records_task_identification_and_keeps_old_tasks_frozen(finished_run):
    run_dir, results = finished_run
    identification = results["task_identification"]
    assert identification["accuracy"][0] == [None, None, None]             # one trained task: no choice
    assert all(v is not None for v in identification["accuracy"][2])
    states = [torch.load(run_dir / "adapted_state" / f"experience_{e}.pt", weights_only=True) for e in (1, 2, 3)]
    assert states[2]["tasks.centroids"].shape == (3, 5, 64) and states[2]["tasks.clustered"].all()
    for name in ("tasks.contexts.0", "tasks.image_prompts.0"):
        assert torch.equal(states[0][name], states[2][name]) and torch.equal(states[1][name], states[2][name])
    assert torch.equal(states[0]["tasks.centroids"][0], states[2]["tasks.centroids"][0])
    assert not torch.equal(states[1]["tasks.contexts.1"], states[2]["tasks.contexts.2"])


def test_a_resumed_run_restores_the_centres(finished_run, tmp_path, monkeypatch):
    """Crashed in experience 3: the checkpoint after experience 2 holds two tasks' centres and a task
    identification row with values (plain floats: a checkpoint loads with weights_only)."""
    reference_dir, reference = finished_run
    forward = SPrompts.forward

    def crash_in_experience_3(self, images, candidate_classes=None):
        if self.training and self.tasks.current == 2:
            raise RuntimeError("simulated crash")
        return forward(self, images, candidate_classes)

    monkeypatch.setattr(SPrompts, "forward", crash_in_experience_3)
    with pytest.raises(RuntimeError, match="simulated crash"):
        run(compose_config(RUN), tmp_path / "run")
    monkeypatch.setattr(SPrompts, "forward", forward)
    # resumed after experience 2: tasks 1-2's centres come from the checkpoint, and choose against task 3's
    results = run(compose_config(RUN), tmp_path / "run")
    assert results["resumed"][0]["from_experience"] == 3
    assert results["accuracy_matrix"] == reference["accuracy_matrix"]
    assert results["task_identification"] == reference["task_identification"]
    ours = torch.load(tmp_path / "run" / "adapted_state" / "experience_3.pt", weights_only=True)
    theirs = torch.load(reference_dir / "adapted_state" / "experience_3.pt", weights_only=True)
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
