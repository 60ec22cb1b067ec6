from __future__ import annotations

from collections.abc import Iterator

import pytest

from api.runtime import Runtime
from api.settings import Settings


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    """The application and views on a clean database, with no followers running."""
    built = Runtime(settings)
    try:
        yield built
    finally:
        built.close()
