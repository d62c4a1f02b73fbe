# op: service.query
$DataB64 = '__FAILOVER_DATA__'
# --- prologue: identical in every template (tests/test_templates.py checks it) ---
$ErrorActionPreference = 'Stop'
$ProgressPreference = 'SilentlyContinue'
function Get-Win32Code($Exception) {
    # The Win32 error behind an exception chain (0 when there is none).
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        if ($e -is [ComponentModel.Win32Exception]) {
            return $e.NativeErrorCode
        }
        if ($e -is [IO.IOException] -and ($e.HResult -band 0xFFFF0000) -eq 0x80070000) {
            return $e.HResult -band 0xFFFF
        }
    }
    return 0
}
function Get-ErrorChain($Exception) {
    # Every message of the chain: 'Cannot start service' alone hides the cause (1069, 1058, 1068).
    $messages = @()
    for ($e = $Exception; $null -ne $e; $e = $e.InnerException) {
        $text = [string]$e.Message
        $code = Get-Win32Code $e
        if ($code -ne 0 -and $null -eq $e.InnerException) {
            $text = "$text (Win32 error $code)"
        }
        if ($messages -notcontains $text) {
            $messages += $text
        }
    }
    return ($messages -join ' <- ')
}
function Write-Failure($Exception) {
    @{ ok = $false; error = (Get-ErrorChain $Exception) } | ConvertTo-Json -Compress
    exit 1
}
# --- end of prologue ---
# --- helpers: service lookup (identical wherever used) ---
function Get-OneService([string]$Name) {
    # Get-Service -Name treats * ? [ ] as wildcards: an exact name must match exactly one service.
    if ($Name -eq '' -or $Name -match '[\*\?\[\]]') {
        throw "invalid service name '$Name': wildcard characters are not allowed"
    }
    $found = @(Get-Service -Name $Name -ErrorAction SilentlyContinue)
    if ($found.Count -ne 1) {
        throw "expected exactly one service named '$Name', found $($found.Count)"
    }
    return $found[0]
}
# --- end of helpers: service lookup ---
try {
    $Data = [Text.Encoding]::UTF8.GetString([Convert]::FromBase64String($DataB64)) | ConvertFrom-Json
    $svc = Get-OneService ([string]$Data.service)
    # [string] because ConvertTo-Json writes the Status enum as a number.
    [ordered]@{
        ok      = $true
        service = $svc.ServiceName
        state   = [string]$svc.Status
    } | ConvertTo-Json -Compress
}
catch {
    Write-Failure $_.Exception
}
