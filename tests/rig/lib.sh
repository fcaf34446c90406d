# Helpers for rig scenarios (sourced in L1 before /scenario.sh).
# A scenario reports with lines "RIG-RESULT <name> PASS" / "RIG-RESULT <name> FAIL <reason>".

rig_pass() { echo "RIG-RESULT $1 PASS"; }
rig_fail() { _n=$1; shift; echo "RIG-RESULT $_n FAIL ${*:-failed}"; }

# rig_check NAME CMD [ARGS...]: PASS iff CMD exits 0
rig_check() {
	_n=$1; shift
	if "$@"; then rig_pass "$_n"; else rig_fail "$_n" "exit status $?: $*"; fi
}

# rig_require_kvm: FAIL (and return 1) unless /dev/kvm is usable
rig_require_kvm() {
	if [ -c /dev/kvm ]; then return 0; fi
	rig_fail "${1:-kvm}" "/dev/kvm missing in L1"
	return 1
}

# rig_expect NAME REGEX SECONDS CMD [ARGS...]: run CMD (killed after SECONDS),
# show its output, PASS iff its output matches the extended REGEX.
# The output is kept in /tmp/NAME.out.
rig_expect() {
	_n=$1 _re=$2 _t=$3; shift 3
	timeout "$_t" "$@" </dev/null 2>&1 | tee "/tmp/$_n.out"
	if grep -q -E "$_re" "/tmp/$_n.out"; then
		rig_pass "$_n"
	else
		rig_fail "$_n" "no output matching '$_re' within ${_t}s from: $*"
	fi
}
