"""The console's two languages: English, and French as the vendor's own guide is written.

Pages are written in English; ``FRENCH`` gives each of their texts in French, the
vendor's words where its guide has them (Intégrations, Générer les clés, Jeton secret).
A test checks that every text the templates and the routes show has its French entry.
The language is the one the admin picked (a cookie), else the browser's first choice of
the two, else English.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

LANGUAGES = {"en": "English", "fr": "Français"}
DEFAULT = "en"
COOKIE = "gateway_console_lang"

Translate = Callable[..., str]

FRENCH: Mapping[str, str] = {
    "CloudLink gateway": "Passerelle CloudLink",
    "Skip to content": "Aller au contenu",
    "Main": "Principal",
    "Accounts": "Comptes",
    "Account": "Compte",
    "Signed in as": "Connecté en tant que",
    "Sign out": "Se déconnecter",
    "Sign in": "Se connecter",
    "Signed out.": "Déconnecté.",
    "Operator token": "Jeton d'opérateur",
    "The value of GATEWAY_ADMIN_TOKEN.": "La valeur de GATEWAY_ADMIN_TOKEN.",
    "The console is disabled: set GATEWAY_ADMIN_TOKEN and restart the gateway.": (
        "La console est désactivée : définissez GATEWAY_ADMIN_TOKEN et redémarrez la passerelle."
    ),
    "The operator token is not valid.": "Le jeton d'opérateur n'est pas valide.",
    "Too many wrong tokens from this client; retry after %(seconds)s s.": (
        "Trop de jetons erronés depuis ce client ; réessayez dans %(seconds)s s."
    ),
    "Your session has ended; sign in again.": "Votre session a pris fin ; reconnectez-vous.",
    "This form has expired or did not come from this console; nothing was changed. "
    "Reload the page and try again.": (
        "Ce formulaire a expiré ou ne vient pas de cette console ; rien n'a été modifié. "
        "Rechargez la page et réessayez."
    ),
    "Search by name or id": "Rechercher par nom ou identifiant",
    "Search": "Rechercher",
    "%(count)s accounts": "%(count)s comptes",
    "page %(page)s of %(pages)s": "page %(page)s sur %(pages)s",
    "Name": "Nom",
    "Id": "Identifiant",
    "Created": "Créé",
    "No account matches.": "Aucun compte ne correspond.",
    "Pages": "Pages",
    "Previous": "Précédent",
    "Next": "Suivant",
    "New account": "Nouveau compte",
    "Create": "Créer",
    "Account created.": "Compte créé.",
    "Account renamed.": "Compte renommé.",
    "Integrations": "Intégrations",
    "Integration": "Intégration",
    "Status": "État",
    "Updated": "Modifié",
    "Actions": "Actions",
    "Regenerate keys": "Générer de nouvelles clés",
    "Generate keys": "Générer les clés",
    "Remove": "Supprimer",
    "No integration yet.": "Aucune intégration pour l'instant.",
    "Add an integration": "Ajouter une intégration",
    "Add": "Ajouter",
    "Integration added.": "Intégration ajoutée.",
    "Integration removed.": "Intégration supprimée.",
    "Tenant URL": "URL du locataire",
    "Secret Token": "Jeton secret",
    "Secret token hidden": "Jeton secret masqué",
    "The secret token is shown once, when the keys are generated.": (
        "Le jeton secret n'est affiché qu'une fois, quand les clés sont générées."
    ),
    "Rename": "Renommer",
    "Cancel": "Annuler",
    "Azure AD Sync": "Azure AD Sync",
    "Copy and paste these values where needed in Azure AD SCIM provisioning.": (
        "Copiez et collez ces valeurs dans l'approvisionnement SCIM d'Azure AD."
    ),
    "Copy": "Copier",
    "The secret token is shown only now. Each time keys are generated, the previous token "
    "stops working and Azure AD must be given the new one.": (
        "Le jeton secret n'est affiché que maintenant. Chaque fois que des clés sont "
        "générées, le jeton précédent devient invalide et Azure AD doit recevoir le nouveau."
    ),
    "Done": "Terminé",
    "Back": "Retour",
    "Press the Generate keys button to create keys to copy to Azure AD SCIM provisioning. "
    "Only generate keys as needed.": (
        "Cliquez sur Générer les clés pour créer les clés à copier dans l'approvisionnement "
        "SCIM d'Azure AD. Ne générez des clés qu'en cas de besoin."
    ),
    "Each time keys are generated, the tenant URL and token of a previous sync stop "
    "working, and the SCIM application must be set up with the new keys.": (
        "Chaque fois que l'on génère des clés, l'URL et le jeton d'une synchronisation "
        "précédente deviennent invalides et l'application SCIM doit être configurée avec "
        "les nouvelles clés."
    ),
    "Remove %(name)s?": "Supprimer %(name)s ?",
    "The integration and its settings are removed from this account.": (
        "L'intégration et ses paramètres sont supprimés de ce compte."
    ),
    "Events": "Événements",
    "Event": "Événement",
    "Actor": "Acteur",
    "Action": "Action",
    "Any": "Tous",
    "Asset": "Ressource",
    "Type": "Type",
    "From": "Du",
    "To": "Au",
    "Filter": "Filtrer",
    "Export CSV": "Exporter en CSV",
    "Date": "Date",
    "No event matches.": "Aucun événement ne correspond.",
    "Older events": "Événements plus anciens",
    "Create_action": "Création",
    "Edit_action": "Modification",
    "Delete_action": "Suppression",
    "Edit": "Modifier",
    "Delete": "Supprimer",
    "Provisioning": "Approvisionnement",
    "Admin": "Administration",
    "Messaging": "Messagerie",
    "Presence": "Présence",
    "setup_incomplete": "configuration incomplète",
    "keys_generated": "clés générées",
    "active": "active",
    "consent_pending": "consentement en attente",
    "consent_granted": "consentement accordé",
    "consent_denied": "consentement refusé",
    "consent_not_detected": "consentement non détecté",
    "enabled": "activé",
    "Account SID": "Account SID",
    "Add a channel": "Ajouter un canal",
    "Address": "Adresse",
    "Agent": "Agent",
    "Attachment": "Pièce jointe",
    "Attempts": "Tentatives",
    "Auth Token": "Auth Token",
    "CM.com account ID": "ID de compte CM.com",
    "CM.com settings": "Paramètres CM.com",
    "Channel added.": "Canal ajouté.",
    "Channel deleted.": "Canal supprimé.",
    "Channels": "Canaux",
    "CloudLink endpoints": "Points de terminaison CloudLink",
    "Connected": "Connecté",
    "Contact": "Contact",
    "Conversations": "Conversations",
    "Dead letters": "Lettres mortes",
    "Dead letters queued again.": "Lettres mortes remises en file.",
    "Delete this channel?": "Supprimer ce canal ?",
    "Disable": "Désactiver",
    "Enable": "Activer",
    "Endpoint URL": "URL du point de terminaison",
    "Endpoint added": "Point de terminaison ajouté",
    "Endpoint disabled.": "Point de terminaison désactivé.",
    "Endpoint enabled.": "Point de terminaison activé.",
    "Endpoint removed.": "Point de terminaison supprimé.",
    "Endpoints": "Points de terminaison",
    "Error": "Erreur",
    "Events are no longer delivered to it.": "Les événements ne lui sont plus livrés.",
    "Facebook pages (Messenger)": "Pages Facebook (Messenger)",
    "Failed": "Échec",
    "Free text until": "Texte libre jusqu'au",
    "Kind": "Genre",
    "Last activity": "Dernière activité",
    "Messages to it are no longer received; its conversations and their history are kept.": (
        "Ses messages ne sont plus reçus ; ses conversations et leur historique sont conservés."
    ),
    "No channel yet.": "Aucun canal pour l'instant.",
    "No conversation yet.": "Aucune conversation pour l'instant.",
    "No dead letter.": "Aucune lettre morte.",
    "No endpoint yet.": "Aucun point de terminaison pour l'instant.",
    "No message yet.": "Aucun message pour l'instant.",
    "Number": "Numéro",
    "Number or pages": "Numéro ou pages",
    "Older conversations": "Conversations plus anciennes",
    "Older dead letters": "Lettres mortes plus anciennes",
    "Paste it in the provider's console.": "Collez-la dans la console du fournisseur.",
    "Product token": "Jeton de produit",
    "Provider": "Fournisseur",
    "Queue": "File d'attente",
    "Queue id": "ID de file d'attente",
    "Remove this endpoint?": "Supprimer ce point de terminaison ?",
    "Replay": "Rejouer",
    "Replay all": "Tout rejouer",
    "Replay the ticked ones": "Rejouer la sélection",
    "Reply": "Réponse",
    "Reply queued.": "Réponse mise en file.",
    "Save": "Enregistrer",
    "Saving again replaces the stored secret.": (
        "Enregistrer à nouveau remplace le secret conservé."
    ),
    "Send": "Envoyer",
    "Set on the Twilio number by the gateway.": "Définie sur le numéro Twilio par la passerelle.",
    "Settings saved.": "Paramètres enregistrés.",
    "Signing secret": "Secret de signature",
    "Target": "Cible",
    "The Twilio account's numbers": "Les numéros du compte Twilio",
    "The signing secret is shown only now: the receiver verifies each event's "
    "webhook-signature with it.": (
        "Le secret de signature n'est affiché que maintenant : le destinataire vérifie avec "
        "lui la webhook-signature de chaque événement."
    ),
    "Twilio settings": "Paramètres Twilio",
    "Webhook URL": "URL du webhook",
    "disabled": "désactivé",
    "Activity": "Activité",
    "An Office 365 administrator of the customer's organization must consent once.": (
        "Un administrateur Office 365 de l'organisation du client doit donner son "
        "consentement une fois."
    ),
    "Application (client) ID": "ID d'application (client)",
    "Authorize %(upn)s": "Autoriser %(upn)s",
    "Authorize link": "Lien d'autorisation",
    "Availability": "Disponibilité",
    "Client secret": "Secret client",
    "Combined": "Combinée",
    "Consent link": "Lien de consentement",
    "Delete this presence monitor?": "Supprimer ce moniteur de présence ?",
    "Detail": "Détail",
    "Directory (tenant) ID": "ID de l'annuaire (locataire)",
    "Email": "E-mail",
    "In progress": "En cours",
    "Item": "Élément",
    "Its subscription ends; the users it watched wait for another monitor.": (
        "Son abonnement prend fin ; les utilisateurs qu'il suivait attendent un autre moniteur."
    ),
    "Last presence read from Graph": "Dernière présence lue dans Graph",
    "Microsoft Teams": "Microsoft Teams",
    "Monitor's Teams user (UPN)": "Utilisateur Teams du moniteur (UPN)",
    "No answer came back. If the administrator did consent, enable the integration; "
    "otherwise request a new link.": (
        "Aucune réponse n'est revenue. Si l'administrateur a donné son consentement, "
        "activez l'intégration ; sinon demandez un nouveau lien."
    ),
    "No presence monitor yet.": "Aucun moniteur de présence pour l'instant.",
    "Office 365": "Office 365",
    "Office 365 disabled.": "Office 365 désactivé.",
    "Office 365 enabled.": "Office 365 activé.",
    "One user's presence": "La présence d'un utilisateur",
    "Open the authorize link": "Ouvrir le lien d'autorisation",
    "Presence from CloudLink to Teams": "Présence de CloudLink vers Teams",
    "Presence from Teams to CloudLink": "Présence de Teams vers CloudLink",
    "Presence monitor deleted.": "Moniteur de présence supprimé.",
    "Presence monitors": "Moniteurs de présence",
    "Renew": "Renouveler",
    "Request admin consent": "Demander le consentement administrateur",
    "Result": "Résultat",
    "Run the system check": "Lancer la vérification du système",
    "Secret expires on": "Le secret expire le",
    "Send this link to an Office 365 administrator of the customer's organization.": (
        "Envoyez ce lien à un administrateur Office 365 de l'organisation du client."
    ),
    "Send this link to the monitor's Teams user; they sign in once to authorize it.": (
        "Envoyez ce lien à l'utilisateur Teams du moniteur ; il se connecte une fois pour "
        "l'autoriser."
    ),
    "Settings": "Paramètres",
    "Show": "Afficher",
    "Source": "Source",
    "Subscription expires": "Fin de l'abonnement",
    "Sync all": "Tout synchroniser",
    "Sync all started.": "Synchronisation complète lancée.",
    "System check": "Vérification du système",
    "The administrator declined the consent. Request a new link and ask them again.": (
        "L'administrateur a refusé le consentement. Demandez un nouveau lien et sollicitez-le "
        "à nouveau."
    ),
    "The client secret expires within 30 days: create a new one in Azure and save it here.": (
        "Le secret client expire dans moins de 30 jours : créez-en un nouveau dans Azure et "
        "enregistrez-le ici."
    ),
    "The client secret has expired: create a new one in Azure and save it here.": (
        "Le secret client a expiré : créez-en un nouveau dans Azure et enregistrez-le ici."
    ),
    "User": "Utilisateur",
    "Users": "Utilisateurs",
    "Users found in Teams": "Utilisateurs trouvés dans Teams",
    "Valid until": "Valable jusqu'au",
    "Verify configuration": "Vérifier la configuration",
    "What to do": "Que faire",
    "monitors authorized": "moniteurs autorisés",
    "authorized": "autorisé",
    "expires on": "expire le",
    "failed": "en échec",
    "monitors": "moniteurs",
    "monitors needed": "moniteurs nécessaires",
    "users": "utilisateurs",
    "watched": "suivis",
    "subscribed": "abonné",
    "not_authorized": "non autorisé",
    "%(who)s may not sign in to this console.": (
        "%(who)s n'est pas autorisé à se connecter à cette console."
    ),
    "Continue": "Continuer",
    "Microsoft refused the sign-in: %(detail)s": "Microsoft a refusé la connexion : %(detail)s",
    "Sign in with Microsoft": "Se connecter avec Microsoft",
    "Signed in": "Connecté",
    "This sign-in has expired or did not start here; sign in again.": (
        "Cette connexion a expiré ou n'a pas commencé ici ; reconnectez-vous."
    ),
    "Work account": "Compte professionnel",
    "Not found": "Introuvable",
    "Refused": "Refusé",
    "Conflict": "Conflit",
    "Unavailable": "Indisponible",
}

# Words whose English is also a key of another sense: the action "Create" is shown as
# "Création", the button "Create" as "Créer" (and so for Edit and Delete).
_CONTEXTS = {
    ("action", "Create"): "Create_action",
    ("action", "Edit"): "Edit_action",
    ("action", "Delete"): "Delete_action",
}

ENGLISH_STATUS = {
    "setup_incomplete": "setup incomplete",
    "keys_generated": "keys generated",
    "active": "active",
    "consent_pending": "consent pending",
    "consent_granted": "consent granted",
    "consent_denied": "consent denied",
    "consent_not_detected": "consent not detected",
    "enabled": "enabled",
    "disabled": "disabled",
}


@functools.cache
def translator(lang: str) -> Translate:
    """``_(text, **values)`` for a page: ``text`` in ``lang``, its ``%(name)s`` filled."""
    table = FRENCH if lang == "fr" else {}

    def translate(text: str, **values: object) -> str:
        found = table.get(text, text)
        return found % values if values else found

    return translate


def action_name(lang: str, action: str) -> str:
    """An event's action (Create, Edit, Delete) as the Events page names it."""
    key = _CONTEXTS.get(("action", action), action)
    return FRENCH.get(key, action) if lang == "fr" else action


def status_name(lang: str, status: str) -> str:
    """An integration's status as words."""
    if lang == "fr":
        return FRENCH.get(status, status.replace("_", " "))
    return ENGLISH_STATUS.get(status, status.replace("_", " "))


def choose(cookie: str | None, accept_language: str) -> str:
    """The page's language: the admin's pick, else the browser's first of ours."""
    if cookie in LANGUAGES:
        return cookie
    for part in accept_language.split(","):
        tag = part.split(";")[0].strip().lower()
        primary = tag.split("-")[0]
        if primary in LANGUAGES:
            return primary
    return DEFAULT
