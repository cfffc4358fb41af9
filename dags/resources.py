"""The one external system the assets and jobs use: the cdrflow home (SPEC §2)."""

from pathlib import Path

import dagster as dg

from pipelines.home import resolve_home


class CdrflowHome(dg.ConfigurableResource):
    """The home every asset, check, job and sensor works on: ``path`` when given, else
    ``$CDRFLOW_HOME`` (what ``cdrflow ui`` sets for the processes it starts), else
    ``./cdrflow-home``, read when a run or a sensor tick uses it, not when the code loads."""

    path: str = ""

    def home(self) -> Path:
        return resolve_home(self.path or None)


RESOURCES = {"home": CdrflowHome()}
