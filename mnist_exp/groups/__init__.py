"""One module per config group that builds something (conf/<group>/*.yaml names a builder here by
`_target_`): model, schedule, split, augment, callbacks."""
