#!/usr/bin/env bash
# The artifact streaming setup guide's command-line steps, run verbatim
# with az aliased to sluice against a Sluice registry, each followed by a
# check of its result. guide_test.go builds sluice and sluiced, starts two
# registries and sets:
#   REGISTRY_HOST, REGISTRY_PASSWORD  the registry the guide sets up ("mystreamingtest")
#   UPSTREAM_HOST, UPSTREAM_PASSWORD  the registry the guide imports from (docker.io in the guide)
#   IMAGE_NOTEBOOK, IMAGE_LARGE       the guide's image and a large one, as oci:DIR:TAG
#   WORK                              a scratch directory
# The one departure from the guide: the import source is the upstream
# registry on loopback, not docker.io.
set -euo pipefail
shopt -s expand_aliases
alias az=sluice

REPO=jupyter/all-spark-notebook

step() { printf '\n$ %s\n' "$*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
show() { printf '%s\n' "$1" | head -n "${2:-12}"; }
check() { # check WHAT GOT WANT
	[ "$2" = "$3" ] || fail "$1: got '$2', want '$3'"
	echo "ok: $1 = $3"
}
contains() { # contains WHAT TEXT PART
	case "$2" in *"$3"*) echo "ok: $1" ;; *) fail "$1: no '$3' in: $2" ;; esac
}
json_field() { # json_field NAME TEXT: the first "NAME": "value" of pretty JSON
	printf '%s\n' "$2" | sed -n 's/^ *"'"$1"'": "\([^"]*\)".*/\1/p' | head -n 1
}

step "sluice login (the guide's az login)"
sluice login upstream --url "http://$UPSTREAM_HOST" -u admin -p "$UPSTREAM_PASSWORD" -o none
sluice login mystreamingtest --url "http://$REGISTRY_HOST" -u admin -p "$REGISTRY_PASSWORD" -o none
check "configuration file mode" "$(stat -c %a "$XDG_CONFIG_HOME/sluice/config.yaml")" 600

step "skopeo copy $IMAGE_NOTEBOOK docker://upstream/$REPO:latest (the image on Docker Hub)"
skopeo copy -q --dest-tls-verify=false --dest-creds "admin:$UPSTREAM_PASSWORD" "$IMAGE_NOTEBOOK" "docker://$UPSTREAM_HOST/$REPO:latest"
upstream_digest=$(sluice manifest show-metadata -r upstream -n "$REPO:latest" --query digest -o tsv)
echo "upstream digest $upstream_digest"

step "az config set defaults.acr=mystreamingtest"
az config set defaults.acr=mystreamingtest
check "defaults.acr" "$(az config get defaults.acr --query value -o tsv)" mystreamingtest

step "az acr import --source $UPSTREAM_HOST/$REPO:latest -t $REPO:latest"
out=$(az acr import --source "$UPSTREAM_HOST/$REPO:latest" -t "$REPO:latest")
show "$out" 6
contains "import succeeded" "$out" '"status": "Succeeded"'
check "imported digest" "$(az acr manifest show-metadata -n "$REPO:latest" --query digest -o tsv)" "$upstream_digest"

step "az acr artifact-streaming create --image $REPO:latest"
out=$(az acr artifact-streaming create --image "$REPO:latest")
show "$out"
contains "conversion succeeded" "$out" '"status": "Succeeded"'

step "az acr manifest list-referrers -n $REPO:latest"
out=$(az acr manifest list-referrers -n "$REPO:latest")
show "$out" 20
contains "streaming referrer" "$out" '"artifactType": "application/vnd.azure.artifact.streaming.v1"'
contains "its platform" "$out" '"streaming.platform.arch": "amd64"'

step "az acr artifact-streaming update -n mystreamingtest --repository $REPO --enable-streaming true"
out=$(az acr artifact-streaming update -n mystreamingtest --repository "$REPO" --enable-streaming true)
show "$out"
contains "auto-streaming on" "$out" '"convertPushedImages": true'

step "skopeo copy $IMAGE_LARGE docker://mystreamingtest/$REPO:newtag (a push with a normal client)"
skopeo copy -q --dest-tls-verify=false --dest-creds "admin:$REGISTRY_PASSWORD" "$IMAGE_LARGE" "docker://$REGISTRY_HOST/$REPO:newtag"

step "az acr artifact-streaming operation show -n mystreamingtest --image $REPO:newtag"
out=$(az acr artifact-streaming operation show -n mystreamingtest --image "$REPO:newtag")
show "$out"
status=$(json_field status "$out")
id=$(json_field id "$out")
case "$status" in NotStarted | Running) echo "ok: the conversion of the push is $status" ;; *) fail "operation status $status" ;; esac
[ -n "$id" ] || fail "no operation id in: $out"

step "az acr artifact-streaming operation cancel -n mystreamingtest --repository $REPO --id $id"
out=$(az acr artifact-streaming operation cancel -n mystreamingtest --repository "$REPO" --id "$id")
show "$out"
contains "canceled" "$out" '"status": "Canceled"'
check "operation status afterwards" "$(az acr artifact-streaming operation show --repository "$REPO" --id "$id" --query status -o tsv)" Canceled
check "streaming artifacts of newtag" "$(az acr manifest list-referrers -n "$REPO:newtag" --query 'length(manifests)' -o tsv)" 0
check "legacy check of latest" "$(sluice teleport check-expansion "$REPO" latest)" "layers ready"

step "az acr repository show -n mystreamingtest --repository $REPO -o jsonc"
out=$(az acr repository show -n mystreamingtest --repository "$REPO" -o jsonc)
show "$out" 20
contains "teleportEnabled" "$out" '"teleportEnabled": true'
contains "tag count" "$out" '"tagCount": 2'
case "$out" in *$'\e['*) fail "jsonc wrote colours into a pipe" ;; esac

step "az acr token create --name mystreamingtest-pull --scope-map _repositories_pull --query credentials.passwords[0].value -o tsv"
PASSWORD=$(az acr token create --name mystreamingtest-pull --registry mystreamingtest --scope-map _repositories_pull --query "credentials.passwords[0].value" -o tsv)
[ "${#PASSWORD}" -ge 20 ] || fail "the password printed is '$PASSWORD'"
case "$PASSWORD" in *[[:space:]\"]*) fail "the password printed is quoted or padded: '$PASSWORD'" ;; esac
echo "ok: a password of ${#PASSWORD} characters"

step "skopeo copy --src-creds mystreamingtest-pull:\$PASSWORD docker://mystreamingtest/$REPO:latest oci:pulled (a pull with the token)"
skopeo copy -q --src-tls-verify=false --src-creds "mystreamingtest-pull:$PASSWORD" "docker://$REGISTRY_HOST/$REPO:latest" "oci:$WORK/pulled:latest"
check "pulled digest" "sha256:$(skopeo inspect --raw "oci:$WORK/pulled:latest" | sha256sum | cut -d' ' -f1)" "$upstream_digest"
if skopeo copy -q --dest-tls-verify=false --dest-creds "mystreamingtest-pull:$PASSWORD" "oci:$WORK/pulled:latest" "docker://$REGISTRY_HOST/$REPO:pushed" 2>/dev/null; then
	fail "a pull token pushed"
fi
echo "ok: the pull token cannot push"

if [ -n "${PLAIN_REGISTRY_HOST:-}" ]; then
	step "sluice convert $PLAIN_REGISTRY_HOST/$REPO:latest (client-side, for a registry without the referrers API)"
	skopeo copy -q --dest-tls-verify=false "$IMAGE_NOTEBOOK" "docker://$PLAIN_REGISTRY_HOST/$REPO:latest"
	out=$(sluice convert "$PLAIN_REGISTRY_HOST/$REPO:latest")
	show "$out" 20
	contains "pushed in the referrers tag schema" "$out" '"referrersSchema": "tag"'
	check "a second convert finds it" "$(sluice convert "$PLAIN_REGISTRY_HOST/$REPO:latest" --query '[0].existing' -o tsv)" true
	tags=$(skopeo list-tags --tls-verify=false "docker://$PLAIN_REGISTRY_HOST/$REPO")
	contains "referrers tag" "$tags" "sha256-${upstream_digest#sha256:}"
	# The registry's list also holds the signature of its conversion.
	STREAMING_DIGEST="manifests[?artifactType=='application/vnd.azure.artifact.streaming.v1'] | [0].digest"
	check "the same streaming artifact as the registry's conversion" \
		"$(sluice manifest list-referrers "$PLAIN_REGISTRY_HOST/$REPO:latest" --query "$STREAMING_DIGEST" -o tsv)" \
		"$(az acr manifest list-referrers -n "$REPO:latest" --query "$STREAMING_DIGEST" -o tsv)"
fi

echo
echo "the setup guide ran verbatim"
