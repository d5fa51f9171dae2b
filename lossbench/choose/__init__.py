"""Choose a loss for a data set: profile its training split, shortlist losses, sweep, recommend.

``profile`` measures the traits (with intervals), ``shortlist`` turns them into candidate
losses with reasons (the source document's five-point guide and the registry's traits),
``plan`` gives every candidate the same tuning budget, ``flow`` runs it all through the
project's engine and report, ``render`` words the profile. Command line:
``python -m lossbench.choose data=<name> ...``; Python: :func:`lossbench.choose`.
"""
