#!/bin/sh
# A notifier hook (examples/notifier.toml, route "on-role-change"): run once per role change,
# in order, never two at once for a cluster. The notification's JSON (Alertmanager's webhook
# body plus "tandem") is on stdin; exit 0 when done, anything else and it is tried again.
# TANDEM_EVENT_ID is the same if a notifier killed mid-run runs it again: act once per id.
set -eu
payload=$(cat)  # e.g. echo "$payload" | jq -r .alerts[0].annotations.summary
seen="${TANDEM_HOOK_STATE:-/var/lib/tandem-hooks}/seen"
mkdir -p "$(dirname "$seen")"
if grep -qx "$TANDEM_EVENT_ID" "$seen" 2>/dev/null; then
    exit 0  # already done
fi
case "$TANDEM_EVENT_TYPE" in
    RoleChanged)
        logger -t tandem "$TANDEM_CLUSTER: $TANDEM_ROLE_ACTIVE is Active (epoch $TANDEM_ROLE_EPOCH, was ${TANDEM_ROLE_PREVIOUS:-nobody}): $TANDEM_ROLE_REASON"
        ;;
    NodeSelfFenced)
        logger -t tandem "$TANDEM_CLUSTER: $TANDEM_NODE fenced itself: $TANDEM_ROLE_REASON"
        ;;
    *)
        logger -t tandem "$TANDEM_CLUSTER: $TANDEM_ALERT_CODE $TANDEM_ALERT_STATUS: ${#payload} bytes"
        ;;
esac
echo "$TANDEM_EVENT_ID" >>"$seen"
