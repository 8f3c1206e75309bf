// Starts ReDoc on /redoc with the answer's style nonce (see redoc.html); no inline script.
"use strict";

const root = document.getElementById("redoc");
Redoc.init(root.dataset.specUrl, { nonce: root.dataset.nonce, hideLoading: true }, root);
