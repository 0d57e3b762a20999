#!/bin/sh
# The GitOps steps, the same in every CI system (GitHub Actions and GitLab CI call this script).
#   ci.sh review   on a merge request: validate, plan (saved, as JSON and as Markdown); exit 3 on an invalid
#                  manifest, 1 on a conflict, 0 otherwise (2 would mean changes: --detailed-exitcode is not used)
#   ci.sh deploy   on merge: plan and apply exactly that plan (refused if Consul changed in between)
# Environment: CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN (or _FILE) as for Consul's own CLI; MANIFESTS (default: the
# consul/ folder beside this script); SET (default: the repository's name), the apply set whose owners it manages.
set -eu
here=$(cd "$(dirname "$0")" && pwd)
manifests=${MANIFESTS:-$here/consul}
set_name=${SET:-$(basename "$here")}
out=${OUT:-$PWD/consul-manifest-out}
mkdir -p "$out"

case "${1:-}" in
review)
    consul-manifest validate --output json "$manifests" > "$out/validate.json"
    consul-manifest plan --set "$set_name" --prune --out "$out/plan.json" --output markdown "$manifests" \
        > "$out/plan.md"
    ;;
deploy)
    consul-manifest plan --set "$set_name" --prune --out "$out/plan.json" --output markdown "$manifests" \
        > "$out/plan.md"
    consul-manifest apply --plan "$out/plan.json" --output json > "$out/apply.json"
    ;;
*)
    echo "usage: ci.sh review|deploy" >&2
    exit 64
    ;;
esac
