# vms-uplink container image.
#
# Build:   docker build -t vms-uplink .
# Run:
#   docker run -d --name vms-uplink --restart unless-stopped --stop-timeout 30 \
#     -v /etc/vms-uplink/config.yaml:/etc/vms-uplink/config.yaml:ro \
#     -v /etc/vms-uplink/credentials/alo_token:/run/secrets/alo_token:ro \
#     -v /srv/vms/exports:/srv/vms/exports:ro \
#     -v vms-uplink-ledger:/var/lib/vms-uplink \
#     --read-only --cap-drop ALL --security-opt no-new-privileges \
#     --cpu-shares 256 --blkio-weight 100 \
#     vms-uplink
#   docker logs -f vms-uplink                                   # JSON lines (pino)
#   docker exec vms-uplink node /app/dist/src/cli.js status     # or: retry ID
#   docker run --rm -v /etc/vms-uplink/config.yaml:/etc/vms-uplink/config.yaml:ro \
#     -v /etc/vms-uplink/credentials/alo_token:/run/secrets/alo_token:ro vms-uplink check-config
#
# - The process runs as uid/gid 1000 (`node`). It must be able to READ the exports, the config
#   file and the secret files: e.g. chgrp 1000 + chmod g+r on the host, or --group-add <gid> of a
#   group that can read them. Secrets: ${CREDENTIALS_DIRECTORY} is /run/secrets in this image, so
#   the config's `bearer_file: "${CREDENTIALS_DIRECTORY}/alo_token"` reads a bind-mounted file or
#   a compose secret named alo_token.
# - /srv/vms/exports is mounted read-only; with after_upload delete/move mount it read-write.
# - The ledger lives in the volume /var/lib/vms-uplink. A named volume starts out owned by uid 1000;
#   a host directory bind-mounted there must be chown 1000:1000.
# - Stop timeout: `docker stop` waits 10 s before SIGKILL by default, which is exactly the daemon's
#   drain deadline (upload.drain_timeout, 10 s). Give it 30 s: --stop-timeout 30 / compose
#   stop_grace_period: 30s. SIGTERM reaches node through tini and the daemon exits 0.
# - The recorder comes first: --cpu-shares 256 (Docker's default, the recorder's share, is 1024)
#   and --blkio-weight 100 (default 500) give way to it when CPU or disk are contended, and cost
#   nothing when they are idle. docker-compose.example.yml (cpu_shares, blkio_config.weight)
#   explains them; the systemd unit does the same with Nice=, CPUWeight= and IOWeight=.
# - Behind a TLS-inspecting proxy: --build-arg EXTRA_CA_CERTS="$(cat corp-ca.pem)" (see below).
# - No public registry: --build-arg NODE_IMAGE=<a local image with Node 20 in /usr/local>; `npm run
#   test:docker` builds one (debootstrap + this machine's Node) and tests the image built on it.
# - Restarts: exit 2 means a bad configuration; Docker cannot exempt an exit code from its restart
#   policy, so a bad file restarts with back-off until it is fixed: read `docker logs`.
# - No HEALTHCHECK: GET /healthz answers only where the config sets `api.listen` (and on the port it
#   names); `status` reads the ledger and would say nothing about whether the daemon runs. Where
#   it is set: HEALTHCHECK CMD node -e "fetch('http://127.0.0.1:PORT/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))".

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: compile better-sqlite3 from source, build dist/, drop dev dependencies -------------
# Few instructions on purpose: on the vfs storage driver (no overlay filesystem) every one of them,
# even ENV or WORKDIR, copies the whole root once more.
FROM ${NODE_IMAGE} AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*

# Dependencies first, so this slow layer (SQLite compile) is cached until the lock file changes.
# --ignore-scripts also skips our own `prepare` (tsc), which needs the sources copied below; the
# one dependency whose install script matters, better-sqlite3 (the only production package with
# "hasInstallScript" in package-lock.json), is then built explicitly.
# build_from_source: better-sqlite3's install script (`prebuild-install || node-gyp rebuild`)
# downloads no prebuilt binary and compiles SQLite here. nodedir: node-gyp uses the headers of the
# image's own node (/usr/local/include/node) instead of fetching them from nodejs.org. JOBS: its
# two sources (SQLite and the addon) compile side by side.
# Sites whose build reaches the npm registry through a TLS-inspecting proxy pass the proxy's CA
# certificate(s) as PEM text: --build-arg EXTRA_CA_CERTS="$(cat corp-ca.pem)". npm (Node) trusts
# them beside its own CAs for `npm ci`, the one step that downloads. Declared in this stage only,
# after the apt layer (which stays cached): the final image neither holds it nor lists it in
# `docker history`. A CA certificate is public; never pass a secret (an npm token) this way.
ARG EXTRA_CA_CERTS=""
COPY package.json package-lock.json /app/
RUN cd /app \
 && export npm_config_build_from_source=true npm_config_nodedir=/usr/local JOBS=max \
           npm_config_audit=false npm_config_fund=false npm_config_update_notifier=false \
 && printf '%s\n' "$EXTRA_CA_CERTS" > /tmp/extra-ca.pem \
 && NODE_EXTRA_CA_CERTS=/tmp/extra-ca.pem npm ci --ignore-scripts \
 && rm /tmp/extra-ca.pem \
 && npm rebuild better-sqlite3 \
 && test -f node_modules/better-sqlite3/build/Release/better_sqlite3.node

# Sources (see .dockerignore), then dist/ with tsc (a dev dependency), then prune dev
# dependencies (prune runs no lifecycle scripts, so `prepare` does not run again), drop
# better-sqlite3's sources and compiler intermediates (~25 MB; only the .node file is loaded), and
# leave in /app only what the runtime stage takes: package.json, node_modules and dist/.
COPY . /app/
RUN cd /app \
 && npm run build \
 && npm prune --omit=dev --audit=false --fund=false \
 && rm -rf package-lock.json tsconfig*.json src scripts test \
 && cd node_modules/better-sqlite3 \
 && rm -rf deps src build/deps build/Release/obj build/Release/obj.target build/Release/.deps \
           build/Release/sqlite3.a build/Release/test_extension.node

# ---- runtime -----------------------------------------------------------------------------------
FROM ${NODE_IMAGE}
# tini as PID 1: forwards SIGTERM to node and reaps zombies (instead of `docker run --init`). The
# ledger directory, owned by the runtime user BEFORE the VOLUME line (a new named volume is
# initialised from it, ownership included); mount points for the config and the exports.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/* \
 && install -d -o 1000 -g 1000 -m 0750 /var/lib/vms-uplink \
 && install -d -m 0755 /etc/vms-uplink /srv/vms/exports
ENV NODE_ENV=production \
    CREDENTIALS_DIRECTORY=/run/secrets
WORKDIR /app
VOLUME /var/lib/vms-uplink
# = node:node, numeric so that Kubernetes' runAsNonRoot can verify it. SIGTERM, Docker's default
# stop signal, reaches node through tini.
USER 1000:1000
ENTRYPOINT ["/usr/bin/tini", "--", "node", "/app/dist/src/cli.js"]
CMD ["run", "--config", "/etc/vms-uplink/config.yaml"]
# The application last, so that a change to it rebuilds only this layer. Owned by root (COPY
# ignores USER) and read-only to the daemon's user.
COPY --from=build /app /app
