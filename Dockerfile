# syntax=docker/dockerfile:1
#
# The image of the `code` service (Dagster gRPC code server for stream_assets.definitions); the
# webserver and the daemon run the same image with other commands (docker-compose.yml).
# Build: `docker compose build` (docs/deploy.md). Cache mounts need BuildKit, the default builder.

# ---------------------------------------------------------------------------------------------
# Build stage: Python dependencies into a venv, and the Spark jars resolved by Maven.
# Maven and its repository stay here; only the venv and the jar folder reach the final image.
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS build

ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# Maven resolves the jars; the JDK compiles the project's own Spark functions (jvm/udf).
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jdk-headless maven \
 && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src

# Third-party dependencies first, read from pyproject.toml alone, so that this layer (pyspark
# alone is about 450 MB) is rebuilt when the pins change and not on every source edit.
COPY pyproject.toml ./
RUN --mount=type=cache,target=/root/.cache/pip \
    python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['deploy']))" \
        > /tmp/requirements.txt \
 && pip install -r /tmp/requirements.txt

# The jars go to a folder outside STREAM_ASSETS_HOME: compose mounts a volume there, which
# would hide anything the image put below it. Run from /src so that `stream_assets` is the
# source tree next to jvm/ (the installed package has no poms); pyspark comes from the venv,
# whose own jars are left out of the folder. The `spark` and `udf` groups: the broker is its
# own container (apache/kafka), so the `kafka` group is not needed here.
ENV STREAM_ASSETS_JARS=/opt/stream_assets/jars
COPY jvm ./jvm
COPY stream_assets ./stream_assets
RUN --mount=type=cache,target=/root/.m2 \
    python -c "from stream_assets import jars; jars.resolve('spark', quiet=False); jars.resolve('udf')" \
 && ls "$STREAM_ASSETS_JARS/spark"/*.jar "$STREAM_ASSETS_JARS/udf"/*.jar > /dev/null

# The project itself (its dependencies are already there, so this step is quick), then a
# smoke test from / so that the installed package, not /src, loads the code location.
COPY . .
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ".[deploy]" \
 && cd / && python -c "import dagster_postgres, stream_assets.definitions"

# ---------------------------------------------------------------------------------------------
# Runtime stage: Python, a Java 17 runtime for Spark, the venv, the jars, the instance config.
# ---------------------------------------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The man1 folder: the JRE's postinst registers man pages with update-alternatives, which fails
# on slim images that have no man folders. procps: Spark's launch scripts call `ps`.
RUN mkdir -p /usr/share/man/man1 \
 && apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/*

# A fixed uid, so that files in the volumes keep one owner across image rebuilds.
RUN groupadd --system --gid 10001 dagster \
 && useradd --system --uid 10001 --gid dagster --create-home --home-dir /home/dagster dagster

# Root-owned and so read-only for the service user: the code cannot change itself.
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/stream_assets/jars /opt/stream_assets/jars

ENV PATH=/opt/venv/bin:$PATH \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    STREAM_ASSETS_HOME=/var/lib/stream_assets \
    STREAM_ASSETS_JARS=/opt/stream_assets/jars

# dagster.yaml and workspace.yaml are baked in (compose mounts no config), so an image and its
# instance config always match. The two writable places are created here, owned by the service
# user, because a named volume mounted on an image folder takes that folder's owner:
#   $DAGSTER_HOME/storage   compute logs and local artifacts (volume `dagster_storage`)
#   $STREAM_ASSETS_HOME     Delta tables and checkpoints (volume `stream_assets_home`)
COPY deploy/dagster.yaml deploy/workspace.yaml /opt/dagster/dagster_home/
RUN mkdir -p /opt/dagster/dagster_home/storage /var/lib/stream_assets /opt/dagster/work \
 && chown dagster:dagster /opt/dagster/dagster_home /opt/dagster/dagster_home/storage \
        /var/lib/stream_assets /opt/dagster/work

USER dagster
# Spark puts spark-warehouse/ and derby.log in the working folder; keep them out of the volumes.
WORKDIR /opt/dagster/work

# 4000: the gRPC code server (this CMD). 3000: dagster-webserver when the image runs as `webserver`.
EXPOSE 4000 3000

# 0.0.0.0 inside the container so that the webserver and daemon containers reach it; compose
# publishes no port for it on the host.
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "stream_assets.definitions"]
