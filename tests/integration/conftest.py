from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.container import Container
from api.settings import Settings


@pytest.fixture
def container(settings: Settings) -> Iterator[Container]:
    """The application and views on a clean database, with no followers running."""
    started = Container(settings).start()
    try:
        yield started
    finally:
        started.close()
