"""``python -m hefl`` = the ``hefl`` command."""

from hefl.cli import main

raise SystemExit(main())
