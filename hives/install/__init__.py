"""`rbee hive install HOST` over SSH, and `uninstall`, `status`, `upgrade`.

    config.py     hives.conf: ssh_config syntax plus rbee's keys, parsed by asyncssh
    hostkeys.py   known_hosts: verify, refuse unknown (with the fingerprint) and changed keys
    remote.py     one SSH connection: commands, SFTP files, what failed
    detect.py     what the host is (OS, CPU, NVIDIA GPUs, Python, systemd) and its extra
    wheel.py      the queen's own rbee wheel and its SHA-256 (built from source or fetched)
    service.py    the systemd unit, the launchd plist, the fallback supervisor; the layout
    supervise.py  the fallback supervisor itself (runs on the host; standard library only)
    queen.py      the queen's side: the hive token, its record, whether it connected
    installer.py  the steps, in order, and how a failed one leaves the host as it was

Nothing is imported here: `python -m hives.install.supervise` runs on hives that have
no database and no SSH library loaded.
"""
