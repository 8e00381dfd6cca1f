"""mrface bench: the benchmark suites of a source checkout, their result files and the BENCHMARKS.md document.

Modules, each importing only those listed after it:

* :mod:`~mrface.bench.cli`: the ``mrface bench`` subcommand (argument parsing, the ``report``, ``gpu`` and
  ``--compare`` commands);
* :mod:`~mrface.bench.gpu`: the GPU evidence suite (``mrface bench gpu``): GPU tests, sections, goals;
* :mod:`~mrface.bench.suite`: finding ``benchmarks/`` and running its scripts into one run report;
* :mod:`~mrface.bench.report`: BENCHMARKS.md from stored result files and ``benchmarks/notes.md``;
* :mod:`~mrface.bench.compare`: two runs compared row by row, regressions flagged;
* :mod:`~mrface.bench.specs`: what runs: one spec per benchmark (script, arguments, headline), GPU sections;
* :mod:`~mrface.bench.headlines`: each benchmark's lines of the headline table, from its rows;
* :mod:`~mrface.bench.tables`, :mod:`~mrface.bench.plots`, :mod:`~mrface.bench.errors`: table formatting,
  scaling plots, the user-facing error.
"""
