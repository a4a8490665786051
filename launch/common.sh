# Shared by the launch scripts (sourced): checks the required variables and prints what runs.
# Nothing here deletes or overwrites files; a workdir that exists is resumed by the trainer.

require() {  # require VAR...: stop with a message when a variable is empty
  local name
  for name in "$@"; do
    if [ -z "${!name:-}" ]; then
      echo "error: set ${name} (see the header of $0)" >&2
      exit 2
    fi
  done
}

print_commit() {  # the code version this job runs, for the logs
  local repo="$1"
  if git -C "${repo}" rev-parse HEAD >/dev/null 2>&1; then
    local dirty=""
    git -C "${repo}" diff --quiet HEAD -- 2>/dev/null || dirty=" (with uncommitted changes)"
    echo "anifacegan_jax commit $(git -C "${repo}" rev-parse HEAD)${dirty}"
  else
    echo "anifacegan_jax: ${repo} is not a git checkout (commit unknown)"
  fi
}
