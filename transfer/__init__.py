"""Transfer of the weak-label network to target tasks (paper sections 3-4).

Pure layer (arrays in, arrays/tables/PNGs out; no Ray, no model):

- ``transfer.feature_sets``: segment -> clip mapping (max/avg) and the paper's named sets
  ("F1 max", "F2 avg", "F1+F2 max", ...).
- ``transfer.svm``: linear-SVM protocol with nested validation over official folds, split into
  independent (feature set, test fold) units for parallel execution.
- ``transfer.svm_solver``: the exact linear SVM (finite Newton, LinearSVC's objective) it solves
  along the C grid.
- ``transfer.baseline``: MFCC-statistics baseline features.
- ``transfer.semantic``: t-SNE, top source classes per target class, class similarity.
- ``transfer.results`` / ``transfer.plots``: tables (Markdown, CSV, JSON) and PNG figures.

Nothing is imported here, so ``import transfer.svm`` in a Ray worker does not pull in torch or
matplotlib.
"""
