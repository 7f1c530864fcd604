#!/bin/sh
# The Python the Makefile's venv is made with, and the venv itself. POSIX sh: it must run where the only
# Python is too old, to say so in one line. The floor and the tested versions are read from pyproject.toml.
#
#   python.sh pick PYTHON VENV   print the interpreter's path, or the one line saying which versions work:
#                                PYTHON if given; else VENV's own Python if it fits; else python3 if new enough;
#                                else the newest python3.X on PATH that is
#   python.sh same PYTHON VENV   print "yes" if VENV was made by the Python PYTHON names
#   python.sh venv PYTHON VENV   make VENV with PYTHON unless one made by it (or, PYTHON unset, by any Python
#                                that fits) is there; a venv of a too-old or another Python is made again
set -eu
cd "${0%/*}/.."

floor=$(sed -n 's/^requires-python = ">=\([0-9.]*\)".*/\1/p' pyproject.toml)
tested=$(sed -n 's/.*"Programming Language :: Python :: \(3\.[0-9][0-9]*\)".*/\1/p' pyproject.toml)
tested=$(echo $tested | sed 's/ /, /g')

fits() {  # runs, and is floor or newer (the check itself runs on Python 2 too)
    "$1" -c "import sys; sys.exit(sys.version_info[:2] < tuple(map(int, '$floor'.split('.'))))" 2>/dev/null
}

describe() { "$1" -c 'import platform; print("Python " + platform.python_version())' 2>/dev/null || echo "not runnable"; }

identity() {  # the base installation and its version: a venv reports its base, so both sides compare alike
    "$1" -c 'import sys, platform; print(getattr(sys, "base_prefix", sys.prefix) + " " + platform.python_version())' \
        2>/dev/null || true
}

resolve() { command -v "$1" 2>/dev/null || true; }

venv_python() { case $1 in /*) echo "$1/bin/python" ;; *) echo "$(pwd)/$1/bin/python" ;; esac; }

newest_first() {  # every python3.X name on PATH, the highest X first
    IFS=:
    for dir in $PATH; do
        for f in "$dir"/python3.*; do
            case ${f##*/} in python3.*[!0-9]* | python3.) ;; *) [ -x "$f" ] && echo "${f##*/}" ;; esac
        done
    done | sort -t. -k2,2nr -u
    unset IFS
}

refuse() {  # the one line, for make's $(error); names what was found and how to point PYTHON= at another
    echo "hpsearch needs Python $floor or newer (tested: $tested); $1; install one and point PYTHON= at it," \
         "e.g. make PYTHON=/usr/bin/python3.12"
}

pick() {
    wanted=$1 venv=$2
    if [ -n "$wanted" ]; then
        path=$(resolve "$wanted")
        if [ -z "$path" ]; then refuse "PYTHON=$wanted is not found"; return; fi
        if ! fits "$path"; then refuse "PYTHON=$wanted is $(describe "$path")"; return; fi
        echo "$path"; return
    fi
    if [ -x "$venv/bin/python" ] && fits "$venv/bin/python"; then venv_python "$venv"; return; fi
    found=""
    for name in python3 $(newest_first); do
        path=$(resolve "$name")
        [ -n "$path" ] || continue
        if fits "$path"; then echo "$path"; return; fi
        found="$found${found:+, }$name is $(describe "$path")"
    done
    refuse "found ${found:-no python3 on PATH}"
}

same() {
    [ -x "$2/bin/python" ] && [ "$(identity "$1")" = "$(identity "$2/bin/python")" ] && echo yes || true
}

venv() {
    python=$1 venv=$2
    if [ -x "$venv/bin/python" ]; then
        if ! fits "$venv/bin/python"; then
            echo "$venv: made by $(describe "$venv/bin/python"), too old; making it again with $python" >&2
        elif [ "$(same "$python" "$venv")" != yes ] && [ "$python" != "$(venv_python "$venv")" ]; then
            echo "$venv: made by $(describe "$venv/bin/python"); making it again with $python" \
                 "($(describe "$python"))" >&2
        else
            return 0
        fi
        rm -rf "$venv"
    fi
    "$python" -m venv "$venv"
}

"$@"
