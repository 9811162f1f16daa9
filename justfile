# kijo-agent development commands. `just --list` shows them all.

default:
    @just --list
