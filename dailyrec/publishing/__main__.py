"""The Redis admin CLI: what is online, and going back to an earlier version.

    python -m dailyrec.publishing status [--set redis.url=...]
    python -m dailyrec.publishing rollback [--to-version VERSION]

Publishing itself is the stage ``python -m tasks.retrieval.publish_redis --cur-date D`` (the same
function the DAG task calls). Layout and protocol: docs/redis-layout.md.
"""

from dailyrec import cli
from dailyrec.publishing.admin import rollback, status

if __name__ == "__main__":
    cli.main(status, rollback, description="Redis admin for the published item vectors (docs/redis-layout.md)")
