# Installed by hc-image. Debian's ceph-mgr 18.2.7 runs every manager module in
# its own Python sub-interpreter, and mgr_util imports bcrypt at load time.
# bcrypt is a PyO3 extension and PyO3 refuses sub-interpreters
# (https://github.com/PyO3/pyo3/issues/576), so every module, the always-on
# ones included, failed with MGR_MODULE_DEPENDENCY. hc-firstboot links this
# file into the manager's module path, ahead of the real bcrypt. Only the
# dashboard's password hashing calls bcrypt, and the dashboard is not
# installed: these functions fail when called.


def _unavailable(*_args, **_kwargs):
    raise RuntimeError("bcrypt cannot load in a ceph-mgr sub-interpreter (PyO3)")


gensalt = hashpw = checkpw = kdf = _unavailable
