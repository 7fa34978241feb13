// Starts Swagger UI on /schema (a file, not an inline script: the Content-Security-Policy runs Siyu's files only).
(function () {
  "use strict";
  var root = document.getElementById("swagger-ui");
  if (!root || typeof window.SwaggerUIBundle !== "function") return;
  window.ui = window.SwaggerUIBundle({
    url: root.getAttribute("data-openapi-url"),
    domNode: root,
    deepLinking: true,
    presets: [window.SwaggerUIBundle.presets.apis],
    layout: "BaseLayout",
    validatorUrl: null, // no badge fetched from another site
    tryItOutEnabled: false,
    persistAuthorization: false
  });
})();
