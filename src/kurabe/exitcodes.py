"""Exit codes of the commands that run a shootout (``kurabe run``, ``bench``, ``demo``,
``judge``); README.md lists them."""

OK = 0  # the run is complete
INTERNAL_ERROR = 1  # an unexpected error inside kurabe (a bug: please report it)
BAD_INPUT = 2  # bad input or usage: nothing was run, or the run could not go on
INCOMPLETE = 3  # the run finished, but some work failed or was skipped; a resume retries it
INTERRUPTED = 130  # stopped by Ctrl-C (SIGINT); a resume finishes it
TERMINATED = 143  # stopped by SIGTERM; a resume finishes it
