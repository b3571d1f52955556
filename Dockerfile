# syntax=docker/dockerfile:1
# provisiond: multi-stage build. The runtime image holds only production dependencies and the
# compiled service, runs as a non-root user, and keeps all state in the /data volume.

ARG NODE_VERSION=20

# --- build: compile TypeScript, the native SQLite addon and the CA's native P-256 module --------
FROM node:${NODE_VERSION}-bookworm-slim AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json binding.gyp ./
COPY native ./native
RUN npm ci --no-audit --no-fund \
 && test -f build/Release/provisiond_native.node
COPY tsconfig.json tsconfig.build.json ./
COPY schemas ./schemas
COPY src ./src
COPY firmware-sim ./firmware-sim
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund

# --- runtime -----------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    PROVISIOND_DATA_DIR=/data \
    PROVISIOND_HTTP__PORT=8080 \
    PROVISIOND_MQTT__PORT=8883 \
    PROVISIOND_EST__PORT=8443
RUN groupadd --system --gid 10001 provisiond \
 && useradd --system --uid 10001 --gid provisiond --home-dir /data --shell /usr/sbin/nologin provisiond \
 && mkdir -p /data && chown provisiond:provisiond /data && chmod 0700 /data
WORKDIR /app
COPY --from=build --chown=root:root /app/package.json ./
COPY --from=build --chown=root:root /app/node_modules ./node_modules
COPY --from=build --chown=root:root /app/dist ./dist
COPY --from=build --chown=root:root /app/src/web ./src/web
COPY --from=build --chown=root:root /app/build/Release/provisiond_native.node ./build/Release/
USER provisiond
VOLUME ["/data"]
EXPOSE 8080 8883 8443
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PROVISIOND_HTTP__PORT || 8080) + '/healthz').then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/src/cli/main.js"]
CMD ["start"]
