# Kiln boot script: balenaOS A/B root selection with boot counting.
# Compiled into /boot/boot.scr (mkimage -T script) by recipes/u-boot.rhai.
#
# distro_bootcmd finds this script on the boot partition (p1, bootable)
# and sets devtype, devnum and distro_bootpart. The board's U-Boot
# environment (recipes/u-boot/kiln/<defconfig>.env) supplies kiln_kernel,
# kiln_console and kiln_boot_kernel; its default environment supplies
# kernel_addr_r.
#
# resinOS_uEnv.txt on the boot partition holds the A/B state, in
# `env import -t` format, exactly:
#     resin_root_part=A        A: root on p2 (boot + 1), B: p3 (boot + 2)
#     upgrade_available=0      1: the root named above is on trial
#     bootcount=0              boots tried while on trial
# While upgrade_available=1, every boot adds one to bootcount and writes
# the file back. Past kiln_bootlimit boots the trial has failed: the other
# root is booted, and the file is written back as committed to it
# (upgrade_available=0, bootcount=0). The kernel gets panic=5, so a root
# that cannot be mounted reboots the machine into the next count.
#
# Fatal errors print "kiln: error: ..." and skip the remaining steps; the
# script then ends with a failure and distro_bootcmd goes on to the next
# boot target. (`exit` cannot be used: in U-Boot 2023.01 it does not stop
# a script run by `source`.)

setenv kiln_fail
setenv kiln_altboot
setenv kiln_envfile resinOS_uEnv.txt
# trial boots of a new root before rolling back (balenaOS: OS_BOOTCOUNT_LIMIT)
setenv kiln_bootlimit 3

if test -z "${devtype}" || test -z "${devnum}" || test -z "${distro_bootpart}"; then
    echo "kiln: error: devtype, devnum or distro_bootpart is not set: boot.scr must be run by distro_bootcmd"
    setenv kiln_fail 1
fi
if test -z "${kiln_kernel}" || test -z "${kiln_console}" || test -z "${kiln_boot_kernel}" || test -z "${kernel_addr_r}"; then
    echo "kiln: error: this U-Boot lacks the Kiln board settings (kiln_kernel, kiln_console, kiln_boot_kernel, kernel_addr_r)"
    setenv kiln_fail 1
fi

# ---- the A/B state ------------------------------------------------------
# Defaults first: a missing or unreadable file boots root A.
setenv resin_root_part A
setenv upgrade_available 0
setenv bootcount 0
if test -z "${kiln_fail}"; then
    if test -e ${devtype} ${devnum}:${distro_bootpart} ${kiln_envfile}; then
        # Only these three variables may come from the file (-r: CRLF too).
        if load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} ${kiln_envfile} 0x1000 && env import -t -r ${kernel_addr_r} ${filesize} resin_root_part upgrade_available bootcount; then
            echo "kiln: ${kiln_envfile}: resin_root_part=${resin_root_part} upgrade_available=${upgrade_available} bootcount=${bootcount}"
        else
            echo "kiln: warning: cannot read ${kiln_envfile}; using resin_root_part=A upgrade_available=0"
            setenv resin_root_part A
            setenv upgrade_available 0
            setenv bootcount 0
        fi
    else
        echo "kiln: warning: no ${kiln_envfile} on ${devtype} ${devnum}:${distro_bootpart}; using resin_root_part=A upgrade_available=0"
    fi
fi
if test "${resin_root_part}" != A && test "${resin_root_part}" != B; then
    echo "kiln: warning: resin_root_part=${resin_root_part} is neither A nor B; using A"
    setenv resin_root_part A
fi
# Anything but 1 means no trial is running (as balenaOS tests it).
if test "${upgrade_available}" != 0 && test "${upgrade_available}" != 1; then
    echo "kiln: warning: upgrade_available=${upgrade_available} is neither 0 nor 1; using 0"
    setenv upgrade_available 0
fi

# ---- boot counting and rollback ------------------------------------------
if test -z "${kiln_fail}" && test "${upgrade_available}" = 1; then
    # A count that is not 0..kiln_bootlimit counts as used up. (Besides,
    # setexpr reads hex and test reads decimal: they agree on 0..9 only.)
    if test "${bootcount}" != 0 && test "${bootcount}" != 1 && test "${bootcount}" != 2 && test "${bootcount}" != 3; then
        echo "kiln: warning: bootcount=${bootcount} is not a count of 0 to ${kiln_bootlimit}; taking it as ${kiln_bootlimit}"
        setenv bootcount ${kiln_bootlimit}
    fi
    setexpr bootcount ${bootcount} + 1
    echo "kiln: bootcount ${bootcount}"
    if test ${bootcount} -gt ${kiln_bootlimit}; then
        if test "${resin_root_part}" = A; then
            setenv resin_root_part B
        else
            setenv resin_root_part A
        fi
        setenv upgrade_available 0
        setenv bootcount 0
        setenv kiln_altboot 1
        echo "kiln: rollback to ${resin_root_part}"
    fi

    # Write the file back, the variables in the order the image builder
    # writes them. Each `env export -t` writes "name=value\n" and a NUL;
    # the next export starts on that NUL, and the file ends before the last.
    setenv kiln_at ${kernel_addr_r}
    for kiln_var in resin_root_part upgrade_available bootcount; do
        env export -t ${kiln_at} ${kiln_var}
        setexpr kiln_at ${kiln_at} + ${filesize}
        setexpr kiln_at ${kiln_at} - 1
    done
    setexpr kiln_size ${kiln_at} - ${kernel_addr_r}
    if fatwrite ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} ${kiln_envfile} ${kiln_size}; then
        echo "kiln: ${kiln_envfile} written: resin_root_part=${resin_root_part} upgrade_available=${upgrade_available} bootcount=${bootcount}"
    else
        # Without a count that persists, a root on trial could fail to boot
        # forever: boot the other (last committed) root instead.
        echo "kiln: error: cannot write ${kiln_envfile}"
        if test -z "${kiln_altboot}"; then
            if test "${resin_root_part}" = A; then
                setenv resin_root_part B
            else
                setenv resin_root_part A
            fi
            setenv kiln_altboot 1
            echo "kiln: rollback to ${resin_root_part}: a trial boot needs a boot count"
        fi
    fi
fi

# ---- the root and the kernel ----------------------------------------------
if test -z "${kiln_fail}"; then
    if test "${resin_root_part}" = B; then
        setexpr kiln_rootpart ${distro_bootpart} + 2
    else
        setexpr kiln_rootpart ${distro_bootpart} + 1
    fi
    # The MBR disk signature is derived from the image's contents, so the
    # PARTUUID (<signature>-<partition>) is read from the disk, not built in.
    if part uuid ${devtype} ${devnum}:${kiln_rootpart} kiln_rootuuid; then
        echo "kiln: root ${resin_root_part} is ${devtype} ${devnum}:${kiln_rootpart}, PARTUUID=${kiln_rootuuid}"
    else
        echo "kiln: error: no partition ${kiln_rootpart} (root ${resin_root_part}) on ${devtype} ${devnum}"
        setenv kiln_fail 1
    fi
fi
if test -z "${kiln_fail}"; then
    if test -e ${devtype} ${devnum}:${distro_bootpart} ${kiln_kernel}; then
        # the last load before booting: kiln_boot_kernel may use ${filesize}
        if load ${devtype} ${devnum}:${distro_bootpart} ${kernel_addr_r} ${kiln_kernel}; then
            echo "kiln: loaded /${kiln_kernel} (0x${filesize} bytes) at ${kernel_addr_r}"
        else
            echo "kiln: error: cannot load /${kiln_kernel} from ${devtype} ${devnum}:${distro_bootpart}"
            setenv kiln_fail 1
        fi
    else
        echo "kiln: error: no /${kiln_kernel} on ${devtype} ${devnum}:${distro_bootpart}"
        setenv kiln_fail 1
    fi
fi
if test -z "${kiln_fail}"; then
    setenv bootargs "root=PARTUUID=${kiln_rootuuid} rootfstype=erofs ro console=${kiln_console} panic=5"
    # tells the OS this boot is a fallback from a failed trial or write
    if test -n "${kiln_altboot}"; then
        setenv bootargs "${bootargs} kiln.altboot=1"
    fi
    # optional extra arguments from the board's environment
    if test -n "${kiln_bootargs}"; then
        setenv bootargs "${bootargs} ${kiln_bootargs}"
    fi
    echo "kiln: booting root ${resin_root_part} (PARTUUID=${kiln_rootuuid})"
    echo "kiln: bootargs: ${bootargs}"
    run kiln_boot_kernel
    echo "kiln: error: ${kiln_boot_kernel} failed"
    setenv kiln_fail 1
fi
# Fails the script, so distro_bootcmd tries its next boot target.
test -z "${kiln_fail}"
