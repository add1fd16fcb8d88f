# Sourced by the scripts: one target dir shared by every clone, CI run and session, outside the
# clone, so a fresh clone does not rebuild the lance + datafusion + burn stack (15 minutes cold).
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/firebrand-target}"
