"""The ``hydra/sweeper=lstsd`` plugin (Hydra takes plugins only from the ``hydra_plugins`` namespace): Hydra's basic
sweeper with :class:`lstsd.launch.sweeper.SweeperParts`, where its behaviour is written and documented."""
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

from lstsd.launch.sweeper import SweeperParts


class LstsdSweeper(SweeperParts, BasicSweeper):
    """``hydra/sweeper=lstsd``: :class:`lstsd.launch.sweeper.SweeperParts`."""
