#!/bin/sh
# Configures U-Boot for the board's defconfig ($KILN_BOOTLOADER_CONFIG, from
# the board's `bootloader: #{ recipe: "u-boot", config: ... }`):
#
#   1. make <defconfig>
#   2. merges kiln/kiln.config (every board) and kiln/<defconfig>.config
#      (this board, if present) on top, then make olddefconfig
#   3. fails if Kconfig dropped or changed anything a fragment asks for
#      (an unmet dependency, a misspelt option)
#   4. adds kiln/<defconfig>.env, the board settings boot.cmd reads, to the
#      default environment (CONFIG_ENV_SOURCE_FILE="kiln", see kiln.config)
#
# Runs in the U-Boot source tree. Usage: sh kiln/configure.sh
set -eu

die() {
    echo "u-boot: error: $*" >&2
    exit 1
}

cfg=${KILN_BOOTLOADER_CONFIG:-}
[ -n "$cfg" ] || die "KILN_BOOTLOADER_CONFIG is empty: the board must name a U-Boot defconfig, e.g. bootloader: #{ recipe: \"u-boot\", config: \"qemu_arm64_defconfig\" }"
case "$cfg" in
    */* | .*) die "KILN_BOOTLOADER_CONFIG=$cfg: expected the name of a file in U-Boot's configs/" ;;
esac
[ -f "configs/$cfg" ] || die "no U-Boot defconfig configs/$cfg in U-Boot $(make -s ubootversion)"
[ -f "kiln/$cfg.env" ] || die "no board settings kiln/$cfg.env (recipes/u-boot/kiln/): boot.cmd needs kiln_kernel, kiln_console and kiln_boot_kernel for $cfg"

frags=kiln/kiln.config
if [ -f "kiln/$cfg.config" ]; then
    frags="$frags kiln/$cfg.config"
fi

make CROSS_COMPILE="$CROSS_COMPILE" "$cfg"
# 64-bit x86 U-Boot 2023.01 cannot start Linux: zboot jumps to the kernel's
# 32-bit entry point while the CPU is in 64-bit mode (arch/x86/lib/bootm.c,
# boot_linux_kernel(): "At present 64-bit U-Boot does not support booting a
# kernel"), which faults and resets the machine.
if grep -qx "CONFIG_X86_64=y" .config; then
    die "$cfg builds a 64-bit U-Boot, which cannot boot Linux in U-Boot 2023.01 (arch/x86/lib/bootm.c); use the 32-bit qemu-x86_defconfig, which boots 64-bit kernels"
fi
# the default environment file the defconfig itself names, if any
base_env=$(sed -n 's/^CONFIG_ENV_SOURCE_FILE="\(.*\)"$/\1/p' .config)

# shellcheck disable=SC2086 # $frags is a list of paths without spaces
scripts/kconfig/merge_config.sh -m .config $frags
make CROSS_COMPILE="$CROSS_COMPILE" olddefconfig

# Every `CONFIG_X=v` line of a fragment must be in .config as it is, and
# every `# CONFIG_X is not set` must not be set.
bad=0
for f in $frags; do
    while IFS= read -r line || [ -n "$line" ]; do
        case "$line" in
            CONFIG_*=*)
                if ! grep -qxF -- "$line" .config; then
                    name=${line%%=*}
                    got=$(grep -E "^(# )?$name[= ]" .config || true)
                    echo "u-boot: $f asks for $line, but .config has: ${got:-nothing (unknown option or unmet dependency)}" >&2
                    bad=1
                fi
                ;;
            "# CONFIG_"*" is not set")
                name=${line#\# }
                name=${name%% *}
                if grep -q "^$name=" .config; then
                    echo "u-boot: $f asks for $line, but .config has: $(grep "^$name=" .config)" >&2
                    bad=1
                fi
                ;;
        esac
    done <"$f"
done
[ "$bad" -eq 0 ] || die "the configuration lacks options Kiln needs (see above)"

# The environment file lives in the board's directory, board/<vendor>/<board>.
vendor=$(sed -n 's/^CONFIG_SYS_VENDOR="\(.*\)"$/\1/p' .config)
board=$(sed -n 's/^CONFIG_SYS_BOARD="\(.*\)"$/\1/p' .config)
[ -n "$board" ] || die "$cfg sets no CONFIG_SYS_BOARD: cannot place the environment file"
dir=board/${vendor:+$vendor/}$board
[ -d "$dir" ] || die "$dir: no such board directory"
{
    # keep the environment U-Boot would have had from a .env file
    if [ -n "$base_env" ]; then
        cat "$dir/$base_env.env"
    elif [ -f "$dir/$board.env" ]; then
        cat "$dir/$board.env"
    fi
    cat "kiln/$cfg.env"
} >"$dir/kiln.env"
echo "u-boot: configured $cfg with $frags; board settings in $dir/kiln.env"
