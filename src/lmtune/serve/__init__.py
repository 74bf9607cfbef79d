"""`lmtune serve`: the OpenAI API (files, fine-tuning jobs, models, completions) on your own hardware.

    lmtune keys create --project research --data-dir /srv/lmtune     # prints an API key once
    lmtune serve --data-dir /srv/lmtune --port 8000
    # then, unchanged: OpenAI(base_url="http://127.0.0.1:8000/v1", api_key=KEY)

Modules: config (ServeConfig), store (SQLite), blobs (files on disk), auth (keys, projects), errors
(OpenAI's error shape), schemas (request bodies), query (query parameters), jobs (job config and
status), worker (entry point of the worker processes), worker_loop (training processes), lifeline
(children die with their parent), progress (metrics and checkpoints into the database), purge
(deletion of every copy), inference (model cache and generation), metrics (Prometheus), app and
routes_* (HTTP), cli.
"""
