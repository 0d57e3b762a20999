"""The manifest files of a running ``run``: watched through their folders, reloaded only when valid.

Folders are watched (not files), so that an editor's atomic save (write a new file, rename it over the old one) is
seen. An invalid edit is reported and the last good manifests stay in force; a manifest file that disappears is an
error, not "desired = empty" (an explicit reload, SIGHUP, accepts it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

from manifest_runner.errors import ManifestError
from manifest_runner.manifest.loader import MANIFEST_SUFFIXES, ManifestSet, load_manifests

log = logging.getLogger("consul_manifest.run")


class ManifestFiles:
    def __init__(self, paths: Sequence[str], current: ManifestSet, on_change: Callable[[], None]) -> None:
        self.paths = list(paths)
        self.current = current
        self.on_change = on_change
        self.problem: str | None = None
        """Why the files on disk are not the manifests in force (an invalid edit, a vanished file), or None."""
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ManifestFiles:
        self._thread = threading.Thread(target=self._watch, name="manifest files", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def reload(self, *, explicit: bool) -> ManifestSet | None:
        """The manifests now on disk when they should replace the current ones; None to keep the current ones
        (an invalid edit, a file that disappeared without an explicit reload, or nothing changed)."""
        try:
            candidate = load_manifests(self.paths)
        except ManifestError as err:
            for problem in err.problems:
                log.error("invalid manifest, the last good one stays in force: %s", problem)
            self.problem = f"invalid manifest on disk (the last good one is in force): {err.problems[0]}"
            return None
        gone = {m.file for m in self.current.manifests} - {m.file for m in candidate.manifests}
        if gone and not explicit:
            names = ", ".join(sorted(map(str, gone)))
            log.error(
                "manifest file %s disappeared: the last good manifests stay in force (send SIGHUP to accept)", names
            )
            self.problem = f"manifest file {names} disappeared (send SIGHUP to accept)"
            return None
        self.problem = None
        if candidate == self.current and not explicit:
            return None
        log.info("manifests reloaded: %s", ", ".join(str(m.file) for m in candidate.manifests))
        self.current = candidate
        return candidate

    def _watch(self) -> None:
        from watchfiles import watch

        while not self._stop.is_set():
            folders = sorted({str(Path(p) if Path(p).is_dir() else Path(p).parent) for p in self.paths})
            try:
                for changes in watch(
                    *folders, stop_event=self._stop, debounce=50, step=50, recursive=False, raise_interrupt=False
                ):
                    if any(self._relevant(Path(changed)) for _, changed in changes):
                        self.on_change()
            except OSError as err:  # a watched folder vanished: report, wait, try again
                log.error("watching %s: %s", ", ".join(folders), err)
                self._stop.wait(1.0)

    def _relevant(self, path: Path) -> bool:
        for given in self.paths:
            root = Path(given)
            if root.is_dir() and path.parent.resolve() == root.resolve() and path.suffix in MANIFEST_SUFFIXES:
                return True
            if path.resolve() == root.resolve():
                return True
        return any(path.resolve() == m.file.resolve() for m in self.current.manifests)
