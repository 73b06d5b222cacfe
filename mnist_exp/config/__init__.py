"""What a run is asked to do: the typed schema, composing overrides into it, building objects
from `_target_` nodes, describing knobs, and the Job/Result records."""
