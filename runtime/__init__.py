"""ontime: run LLM agent workflows that must finish on time and within budget.

    import runtime
    wf = runtime.load_workflow("examples/release20.json")
    result = runtime.run(wf, budget=1.00, deadline=600)
    result = runtime.run(runtime.load_program("wf.py"), budget=0.10, deadline=60)   # a workflow written as code

Names load on first use (``__init__.pyi`` lists them), so ``import runtime`` is light and plug-ins can
import the leaf of shared types, :mod:`runtime.types`, without loading the engine.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach_stub(__name__, __file__)
