"""fab: a lightweight PyTorch training accelerator with Lightning Fabric's API.

``from fab.core import Fabric`` is the entry point. Importing this package is cheap: no plugin
module, no L2 package and no ``torch._dynamo`` is imported until something asks for it.
"""

from typing import TYPE_CHECKING

from fab.core.fabric import Fabric
from fab.core.utilities.seed import seed_everything
from fab.core.utilities.warnings import disable_possible_user_warnings  # as in lightning.fabric
from fab.wrappers import is_wrapped

__all__ = ["Fabric", "__version__", "is_wrapped", "seed_everything"]

if TYPE_CHECKING:
    __version__: str


def __getattr__(name: str) -> str:
    if name == "__version__":
        from importlib.metadata import version

        return version("fab-core")
    raise AttributeError(f"module 'fab.core' has no attribute {name!r}")
