"""The paper's baselines (§5.1), each an ``apply(model, spec, cfg) -> MethodResult``."""
