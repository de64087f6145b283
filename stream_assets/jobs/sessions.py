"""The Spark session each query of a continuous run starts in."""

from contextlib import suppress
from typing import Any

import pyspark
from pyspark.sql import SparkSession
from pyspark.sql.streaming import StreamingQueryListener

from stream_assets.errors import short_error
from stream_assets.sinks import is_connect


class QuerySessions:
    """The session each query of a run starts in, each one reporting to the run's listener.

    A MERGE sink takes its Delta transaction ids from session settings (sinks.merge_once).
    Classic Spark runs every query in a clone of the session that started it, so those
    settings stay the query's own. Through Spark Connect a query's foreachBatch runs in the
    very session it was started from: two queries sharing one could commit under each
    other's ids and lose replay protection. There each query starts in a server-side clone
    of the run's session (same settings), released when the run ends.
    """

    def __init__(self, spark: SparkSession, listener: StreamingQueryListener, log: Any) -> None:
        self.spark = spark
        self.listener = listener
        self.log = log
        self.own: dict[str, SparkSession] = {}
        self.listening: list[SparkSession] = []
        if not is_connect(spark):
            self._listen(spark)

    def for_query(self, name: str) -> SparkSession:
        if not is_connect(self.spark):
            return self.spark
        if name not in self.own:
            self.own[name] = self._clone(name)
            self._listen(self.own[name])
        return self.own[name]

    def _clone(self, name: str) -> SparkSession:
        try:
            return self.spark.cloneSession()
        except Exception as exc:
            self.log.warning(
                f"{name}: the Spark Connect server could not give the query a session of its "
                f"own ({short_error(str(exc), 300)}), so it shares the run's: two MERGE queries "
                "running at once could commit under each other's transaction ids. Use a server "
                f"of the client's Spark version ({pyspark.__version__}) or run them in "
                "separate runs."
            )
            return self.spark

    def _listen(self, session: SparkSession) -> None:
        if not any(s is session for s in self.listening):
            session.streams.addListener(self.listener)
            self.listening.append(session)

    def close(self) -> None:
        """Stop listening, and release the sessions made for queries (stopped by now)."""
        for session in self.listening:
            with suppress(Exception):
                session.streams.removeListener(self.listener)
        self.listening.clear()
        for session in self.own.values():
            if session is not self.spark:
                # Not session.stop(): in Connect's local mode that stops the server too.
                with suppress(Exception):
                    session.client.release_session()
                with suppress(Exception):
                    session.client.close()
        self.own.clear()
