from fitq.cli import main

raise SystemExit(main())
