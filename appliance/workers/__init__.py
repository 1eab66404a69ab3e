"""Remote scan workers: tokens and zones (``store``), the internal HTTPS routes they report through
(``routes``), and the ``cix-appliance worker`` process itself (``remote``)."""
