"""``python -m dailyrec.distributed --job FILE``: one training worker (:func:`dailyrec.distributed.loop.worker`)."""

from dailyrec import cli
from dailyrec.distributed.loop import worker

if __name__ == "__main__":
    cli.main(worker)
