#!/bin/bash
# dracut module 51ociboot: mounts the ociboot deployment named by composefs=<digest> as
# the root in a systemd initramfs, as bootc's 51bootc module does for bootc.
#
# Install this file as /usr/lib/dracut/modules.d/51ociboot/module-setup.sh, the binary as
# /usr/bin/ociboot and systemd/ociboot-setup-root.service as
# /usr/lib/systemd/system/ociboot-setup-root.service. The module is never included by
# default: an image opts in with a dracut.conf.d snippet such as
#   /usr/lib/dracut/dracut.conf.d/50-ociboot.conf: add_dracutmodules+=" ociboot "
# and regenerates its initramfs (/usr/lib/modules/$KVER/initramfs.img).

# called by dracut
check() {
    require_binaries /usr/bin/ociboot || return 1
    # Only when asked for (add_dracutmodules / --add ociboot).
    return 255
}

# called by dracut
depends() {
    # The unit runs in a systemd initrd (initrd-root-fs.target, sysroot.mount).
    echo systemd
    return 0
}

# called by dracut
installkernel() {
    # EROFS for the image, overlayfs for the deployment; loop for kernels without
    # file-backed EROFS mounts.
    instmods erofs overlay loop
}

# called by dracut
# shellcheck disable=SC2154 # initdir and systemdsystemunitdir are dracut's
install() {
    local service=ociboot-setup-root.service
    inst_multiple /usr/bin/ociboot
    inst_simple "${systemdsystemunitdir}/${service}"
    mkdir -p "${initdir}${systemdsystemunitdir}/initrd-root-fs.target.wants"
    ln_r "${systemdsystemunitdir}/${service}" \
        "${systemdsystemunitdir}/initrd-root-fs.target.wants/${service}"
}
