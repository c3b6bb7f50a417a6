"""``python -m appliance.cli``."""

from appliance.cli import main

raise SystemExit(main())
