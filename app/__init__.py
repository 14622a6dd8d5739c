"""The product shell: the ``weaksound`` console entry point, the end-to-end demo and its report.
It sits on top of every stage and is imported by none."""
