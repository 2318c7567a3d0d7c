"""Hashing methods selectable by `config.method`, each a self-describing `Method` in one registry
(registry.py: the contract). The training loop (train.py) and the evaluation (evaluate.py) are
shared; comparison/ and the config schema read the registry.

    method = methods.get("dsrh")       # Method(name, title, build, losses, encode, capabilities,
    methods.names()                    #        options, optimizer_settings); every registered
                                       #        name, in table order
    methods.register(Method(...))      # a new method: one module (or one test file)

Built in, in table order: iah (models/iah.py), one_stage (DNNH), dsrh, qadwh, category_baseline
(IAH Fig. 9); METHODS.md sections 1-6.
"""

from iah_jax.methods.registry import BuildContext
from iah_jax.methods.registry import Capabilities
from iah_jax.methods.registry import Method
from iah_jax.methods.registry import OptimizerSettings
from iah_jax.methods.registry import Settings
from iah_jax.methods.registry import get
from iah_jax.methods.registry import names
from iah_jax.methods.registry import register
from iah_jax.methods.registry import unregister

# Each module registers itself on import; this order is the order of the comparison tables.
from iah_jax.methods import iah  # pylint: disable=wrong-import-position
from iah_jax.methods import one_stage  # pylint: disable=wrong-import-position
from iah_jax.methods import dsrh  # pylint: disable=wrong-import-position
from iah_jax.methods import qadwh  # pylint: disable=wrong-import-position
from iah_jax.methods import category_baseline  # pylint: disable=wrong-import-position
