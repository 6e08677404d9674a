from phoenix_lb.cli import main

raise SystemExit(main())
