"""What finished runs become: tables (:mod:`.tables`), their sweep figures (:mod:`.figures`), the ledger of
published claims (:mod:`.ledger`); ``python -m eval.report.coco_results`` decodes a run's COCO results
file (:mod:`eval.run.coco_results`) to PNG masks. Imports no model code."""
