# One image recipe for every Tandem service; SERVICE picks the workspace member, e.g.
#   docker build --build-arg SERVICE=dns_updater -t tandem-dns-updater .
# SERVICE is the directory under services/ (agent, orchestrator, dns_updater, vmware_bridge, ...).

FROM python:3.11-slim AS build
ARG SERVICE
# Fail the build early and clearly rather than ship an image that runs `tandem.` at start.
RUN test -n "${SERVICE}" || { echo "use --build-arg SERVICE=<dir under services/>" >&2; exit 1; }
# The uv the project pins (Makefile UV_VERSION), so --frozen reads uv.lock as it was written.
RUN pip install --no-cache-dir uv==0.13.9
# The venv is built against the base image's Python and copied whole into the final stage.
ENV UV_PROJECT_ENVIRONMENT=/opt/tandem UV_PYTHON_DOWNLOADS=never UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy
WORKDIR /src
# All members, so one recipe serves every service whatever it depends on; --package below
# installs only the selected member and its dependencies (always tandem-events).
COPY pyproject.toml uv.lock ./
COPY libs/ libs/
COPY services/ services/
COPY cli/ cli/
# --no-editable installs wheels, so the final image needs the venv only, not /src.
RUN uv sync --frozen --no-dev --no-editable --package "tandem-$(echo "${SERVICE}" | tr _ -)"

FROM python:3.11-slim
ARG SERVICE
# A fixed uid so volume permissions do not depend on the build host.
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tandem \
    && mkdir -p /var/lib/tandem /srv/demo/data \
    && chown -R tandem /var/lib/tandem /srv/demo
COPY --from=build /opt/tandem /opt/tandem
# ARG does not reach run time; ENV keeps the service name for the entrypoint and `docker inspect`.
ENV PATH=/opt/tandem/bin:$PATH PYTHONUNBUFFERED=1 TANDEM_IMAGE_SERVICE=${SERVICE}
USER tandem
# exec: the service is PID 1 and receives SIGTERM from `docker stop` directly.
ENTRYPOINT ["/bin/sh", "-c", "exec python -m \"tandem.${TANDEM_IMAGE_SERVICE}\" \"$@\"", "tandem"]
