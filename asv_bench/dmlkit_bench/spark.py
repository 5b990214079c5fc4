"""A local Spark session for the Spark MLlib runners (ALS, LogisticRegression).

``start_spark`` starts the JVM (``local[cores]``, ``spark.driver.memory``) bound to the
loopback interface, with no web UI and Spark's own logging at WARN from the JVM's first
line (a log4j2 file) and at ERROR once it runs (``setLogLevel``); ``stop_spark`` stops the
context and waits for the JVM to exit, so that it neither outlives a benchmark (memory)
nor writes into the next one's output.  ``jvm_gc_seconds`` is the JVM's total garbage
collection time, to check that a timed fit is not spent collecting.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import warnings

_LOG4J2 = """\
rootLogger.level = warn
rootLogger.appenderRef.stderr.ref = console
appender.console.type = Console
appender.console.name = console
appender.console.target = SYSTEM_ERR
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = %d{yy/MM/dd HH:mm:ss} %p %c{1}: %m%n%ex
# WARN: the level PySpark's shell start applies; the same as the root's, so that it
# prints no "Setting default log level" lines.  ERROR after the start (setLogLevel).
# Hadoop's "Unable to load native-hadoop library" is a WARN of no interest here.
logger.hadoop.name = org.apache.hadoop.util.NativeCodeLoader
logger.hadoop.level = error
"""


def spark_missing():
    """Why Spark cannot run here (a message), or None."""
    import importlib.util

    if importlib.util.find_spec("pyspark") is None:
        return "pyspark is not installed (pip install pyspark)"
    java_home = os.environ.get("JAVA_HOME")
    if not (java_home and os.path.exists(os.path.join(java_home, "bin", "java"))) \
            and shutil.which("java") is None:
        return "no Java runtime found (java on PATH or JAVA_HOME)"
    return None


def _log4j2_file():
    path = os.path.join(tempfile.gettempdir(), "dmlkit-bench-spark-log4j2.properties")
    with open(path, "w") as f:
        f.write(_LOG4J2)
    return path


def start_spark(memory="8g", cores=2, app="dmlkit-bench"):
    """A ``local[cores]`` SparkSession (the JVM starts here); raises NotImplementedError
    without pyspark or Java."""
    why = spark_missing()
    if why:
        raise NotImplementedError(f"Spark skipped: {why}")
    warnings.filterwarnings("ignore", module="pyspark")
    warnings.filterwarnings("ignore", message=".*PySpark does not yet fully support.*")
    # Loopback only: no "hostname resolves to a loopback address" warning, nothing
    # listening on an outside interface.
    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    from pyspark.sql import SparkSession

    spark = (SparkSession.builder.master(f"local[{cores}]").appName(app)
             .config("spark.driver.memory", memory)
             .config("spark.driver.host", "127.0.0.1")
             .config("spark.driver.bindAddress", "127.0.0.1")
             .config("spark.driver.extraJavaOptions",
                     f"-Dlog4j2.configurationFile=file:{_log4j2_file()}")
             .config("spark.ui.enabled", "false")
             .config("spark.ui.showConsoleProgress", "false")
             .config("spark.sql.execution.arrow.pyspark.enabled", "true")
             .getOrCreate())
    spark.sparkContext.setLogLevel("ERROR")
    return spark


def jvm_gc_seconds(spark):
    """Total time the driver JVM (which is the executor in local mode) has spent in
    garbage collection so far, in seconds."""
    jvm = spark.sparkContext._jvm
    beans = jvm.java.lang.management.ManagementFactory.getGarbageCollectorMXBeans()
    return sum(max(0, b.getCollectionTime()) for b in beans) / 1000.0


def stop_spark(spark):
    """Stop the session and wait for its JVM to exit."""
    with contextlib.suppress(Exception):
        spark.stop()
    with contextlib.suppress(Exception):
        from pyspark import SparkContext

        gateway = SparkContext._gateway
        proc = getattr(gateway, "proc", None)
        gateway.shutdown()
        SparkContext._gateway = SparkContext._jvm = None
        if proc is not None:
            proc.stdin.close()
            proc.wait(timeout=60)
