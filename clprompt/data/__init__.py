"""What feeds the strategy: training views (augmentation), batched transforms, the feature cache, the training protocols."""
