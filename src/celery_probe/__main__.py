from celery_probe.cli.main import main

main()
