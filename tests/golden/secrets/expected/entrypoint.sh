#!/bin/sh
# Rendered by devbox from devbox.yaml: prepares this host at every start, then runs sshd.
# Secrets come from /run/secrets (compose secrets), never from the image or the environment.
set -eu

secrets=/run/secrets
user=developer

# Secrets reach root only: a compose secret is a bind mount owned by the file's owner on the
# machine, which can be the account's own UID. The image makes the folder 0700; keep it so.
if [ "$(stat -c %a "$secrets")" != 700 ]; then
    chmod 700 "$secrets"
fi

# Password hashes ("account:hash" lines, SHA-512 crypt) are applied as they are: chpasswd -e
# never sees a plaintext password.
if [ -s "$secrets/devbox_passwords" ]; then
    chpasswd -e < "$secrets/devbox_passwords"
fi

# The host key devbox generated once for this host: logins verify it, and it survives rebuilds.
install -m 600 "$secrets/devbox_host_key" /etc/ssh/ssh_host_ed25519_key

# This host's sshd settings (root login, password authentication); read before the image's.
install -m 644 "$secrets/devbox_sshd_config" /etc/ssh/sshd_config.d/10-devbox-host.conf

# The user's home is a named volume (kept across recreation): Docker seeds it from the image at
# its first mount. One that starts empty gets the skeleton; one made under another UID (image.uid
# changed since) is handed to the user as it is now.
home=$(getent passwd "$user" | cut -d: -f6)
group=$(id -gn "$user")
if [ -d "$home" ]; then
    if [ -z "$(ls -A "$home")" ]; then
        cp -a /etc/skel/. "$home"/
        chown -R "$user:$group" "$home"
    elif [ "$(stat -c %u:%g "$home")" != "$(id -u "$user"):$(id -g "$user")" ]; then
        chown -R "$user:$group" "$home"
    fi
fi

# The spec's other named volumes are the user's too (unless the spec says `owner: root`): Docker
# makes a new one root's, so one still empty is handed to the user. One Docker seeded from the
# image's files at that path (a CUDA image's /opt) is root's with them: at a container's first
# start its folder itself (not the files in it) is given to the user, who can then write there;
# after that, one holding files is left as it is (made root's by hand, it stays so).
handed=/etc/devbox-volumes-handed
if [ -s "$secrets/devbox_volumes" ]; then
    while IFS= read -r volume; do
        [ -d "$volume" ] || continue
        if [ -z "$(ls -A "$volume")" ] && [ "$(stat -c %u "$volume")" != "$(id -u "$user")" ]; then
            chown "$user:$group" "$volume"
        elif [ ! -e "$handed" ] && [ "$(stat -c %u "$volume")" = 0 ]; then
            chown "$user:$group" "$volume"
        fi
    done < "$secrets/devbox_volumes"
    : > "$handed"
fi

# Public keys for the user (and for root when root login is allowed).
accounts=$user
while IFS= read -r line; do
    if [ "$line" = "PermitRootLogin yes" ]; then accounts="$user root"; fi
done < /etc/ssh/sshd_config.d/10-devbox-host.conf
if [ -s "$secrets/devbox_authorized_keys" ]; then
    for account in $accounts; do
        home=$(getent passwd "$account" | cut -d: -f6)
        group=$(id -gn "$account")
        install -d -m 700 -o "$account" -g "$group" "$home/.ssh"
        install -m 600 -o "$account" -g "$group" "$secrets/devbox_authorized_keys" "$home/.ssh/authorized_keys"
    done
fi

# The environment this host started with, including what the engine adds (NVIDIA_*): saved for
# `devbox check`, since sshd's process title overwrites /proc/1/environ.
(umask 077 && env > /run/devbox-environment)

# sshd starts every login with a clean environment. Hand it the container's (CUDA's PATH,
# NVIDIA_*, thread limits, the spec's environment) with one SetEnv line: sshd reads quoted
# values literally, where pam_env would cut a value at '#'. Login shells reset PATH, so
# /etc/profile.d/00-devbox-path.sh restores it from /etc/devbox-path.
printf '%s\n' "$PATH" > /etc/devbox-path
# One sed (few processes: start-up counts): drop session variables and anything that is not
# NAME=value, escape \ and ", quote each pair, join them on one line.
# The $ below is sed's last-line address, not a shell expansion.
# shellcheck disable=SC2016
sed -n \
    -e '/^\(HOME\|HOSTNAME\|PWD\|OLDPWD\|SHLVL\|TERM\|USER\|LOGNAME\|SHELL\|MAIL\|_\)=/!{
            /^[A-Za-z_][A-Za-z0-9_]*=/{s/[\\"]/\\&/g;s/.*/ "&"/;H;};}' \
    -e '${x;s/\n//g;s/^/SetEnv/;p;}' \
    /run/devbox-environment > /etc/ssh/sshd_config.d/05-devbox-environment.conf

exec /usr/sbin/sshd -D -e
