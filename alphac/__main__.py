from __future__ import annotations

from alphac.cli import main

main()
