"""What finished runs become: tables (:mod:`.tables`), figures (:mod:`.figures`), the ledger of
published claims (:mod:`.ledger`) and COCO results files (:mod:`.coco_results`). Imports no model code."""
