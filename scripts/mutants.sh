#!/usr/bin/env bash
# Mutation testing (mutmut) of the promise-bearing code: each mutant is a small
# deliberate break, and the tests that cover it must fail. Survivors are either
# killed by a new test or listed in docs/testing.md with why they are harmless.
#
#   bash scripts/mutants.sh               # store/ (backends, sealing, retention, sweeper)
#   bash scripts/mutants.sh web           # request log, error table, admin auth, input parsing
#   bash scripts/mutants.sh bulk          # batches: encryption at rest, retention
#   bash scripts/mutants.sh auth          # admin auth and the error table only (quicker)
#   bash scripts/mutants.sh store web     # both
#   MUTANTS_SECONDS=3600 MUTANTS_JOBS=2 bash scripts/mutants.sh web
#   MUTANTS_ONLY="store.retention.* store.catalog.*" bash scripts/mutants.sh store   # some modules
#
# Runs on a scratch copy of the committed tree (HEAD), so a working tree and
# other people's runs are left alone; prints the score and every survivor, and
# leaves mutmut's state in $MUTANTS_DIR for `mutmut show NAME` there.
# Slow (the web set runs app tests per mutant): not part of CI.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
sets=("$@"); [ ${#sets[@]} -gt 0 ] || sets=(store)
seconds="${MUTANTS_SECONDS:-3600}"   # a bound on the whole run
jobs="${MUTANTS_JOBS:-1}"            # mutants tested at once (one per core at most)
work="${MUTANTS_DIR:-${TMPDIR:-/tmp}/imagegen-mutants-$(id -u)}"

[ -x .venv/bin/mutmut ] || bash scripts/setup.sh "[test,mutants]"

# Each set: the files to mutate, and the tests that hold their promises.
modules=(); tests=()
for set in "${sets[@]}"; do
  case "$set" in
    store)
      modules+=(store/*.py)
      tests+=(tests/store tests/test_retention_api.py) ;;
    web)
      modules+=(web/request_log.py web/errors.py web/admin.py web/image_inputs.py)
      [ -f web/multipart.py ] && modules+=(web/multipart.py)
      tests+=(tests/test_request_log.py tests/test_admin_auth.py tests/test_store_full.py
              tests/test_bad_input.py tests/privacy/test_uploads.py
              tests/privacy/test_form_limits.py tests/privacy/test_image_edits.py
              tests/privacy/test_job_logs.py tests/test_hostile_input.py
              tests/privacy/test_adapter_uploads.py tests/test_retention_api.py
              tests/test_model_manager.py tests/test_metrics.py tests/test_slow_clients.py
              tests/test_admin_api.py tests/test_api_keys.py) ;;
    bulk)  # batches: sealed at rest, dropped at their retention, lines capped by it
      modules+=(service/bulk/*.py)
      tests+=(tests/test_batches.py tests/test_service_runners.py tests/test_privacy.py) ;;
    auth)  # the fast part of web: admin auth and the error table
      modules+=(web/admin.py web/errors.py)
      tests+=(tests/test_admin_auth.py tests/test_admin_api.py tests/test_store_full.py
              tests/test_bad_input.py tests/test_api_keys.py tests/test_hostile_input.py) ;;
    *) echo "unknown set: $set (store, web, bulk, auth)" >&2; exit 2 ;;
  esac
done

rm -rf "$work"; mkdir -p "$work"
git archive HEAD | tar -x -C "$work"
packages=(); for p in imagegen service store web bench; do [ -d "$work/$p" ] && packages+=("$p"); done
existing_tests=(); for t in "${tests[@]}"; do [ -e "$work/$t" ] && existing_tests+=("$t"); done
{
  echo "[mutmut]"
  # Every package is copied (the tests import them all); only the chosen files are mutated.
  echo "source_paths ="; printf '    %s\n' "${packages[@]}"
  echo "only_mutate ="; printf '    %s\n' "${modules[@]}"
  echo "pytest_add_cli_args_test_selection ="; printf '    %s\n' "${existing_tests[@]}"
  echo "pytest_add_cli_args ="; printf '    %s\n' -p no:cacheprovider -x -q
  # torch is not fork-safe after use: workers fork from a server that only imported it.
  echo "process_isolation = forkserver"
} >"$work/setup.cfg"
# mutmut reads [tool.mutmut] before setup.cfg; the project has none.
cd "$work"
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
status=0
# MUTANTS_ONLY: mutant name patterns (module.function*), to test some modules first or alone.
read -r -a only <<<"${MUTANTS_ONLY:-}"
timeout "$seconds" nice -n 10 "$repo/.venv/bin/mutmut" run --max-children "$jobs" "${only[@]}" \
  >mutmut.log 2>&1 || status=$?
[ $status -eq 124 ] && echo "stopped at the ${seconds} s bound: the counts below are partial"
"$repo/.venv/bin/mutmut" export-cicd-stats >/dev/null 2>&1 || true
"$repo/.venv/bin/python" - <<'PY'
import json, pathlib
stats = json.loads(pathlib.Path("mutants/mutmut-cicd-stats.json").read_text())
tested = stats["killed"] + stats["survived"] + stats["timeout"] + stats["suspicious"]
score = stats["killed"] + stats["timeout"]
print(f"mutants {stats['total']}, tested {tested}, killed {stats['killed']}, "
      f"timeout {stats['timeout']}, survived {stats['survived']}, "
      f"no tests {stats['no_tests']}, skipped {stats['skipped']}")
if tested:
    print(f"score {score}/{tested} = {100 * score / tested:.1f}%")
PY
echo "survivors (mutmut show NAME, in $work):"
"$repo/.venv/bin/mutmut" results 2>/dev/null | grep -E "survived|no tests|suspicious" || true
