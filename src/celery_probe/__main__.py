from celery_probe.cli import main

main()
