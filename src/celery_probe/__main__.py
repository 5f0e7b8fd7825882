from celery_probe.cli.entry import main

main()
