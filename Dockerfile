# The llm-egress image: a static-ish release binary on distroless (glibc, no shell),
# running as the unprivileged user 65532. Build: docker build -t llm-egress:0.1.0 .
# Kubernetes use: deploy/kubernetes/ and docs/kubernetes.md.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin llm-egress \
 && objcopy --strip-debug target/release/llm-egress /llm-egress \
 && mkdir -p -m 0700 /state/certs /state/audit

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /llm-egress /usr/local/bin/llm-egress
COPY policies/00-default.toml /etc/llm-egress/policies/00-default.toml
# The default command's CA, chain key and audit log live here. distroless has no shell to
# mkdir, and user 65532 cannot create directories under /var/lib: without this a plain
# `docker run` (or a fresh named volume, which takes the image directory's owner) fails
# to create the CA. Kubernetes mounts an emptyDir here (deploy/kubernetes/).
COPY --from=build --chown=65532:65532 /state /var/lib/llm-egress
USER 65532:65532
EXPOSE 8480 8481
ENTRYPOINT ["/usr/local/bin/llm-egress"]
CMD ["run", "--policy", "/etc/llm-egress/policies", "--certs", "/var/lib/llm-egress/certs", \
     "--audit", "/var/lib/llm-egress/audit/audit.jsonl"]
